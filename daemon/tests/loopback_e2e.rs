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

/// Merged ranges on the edge: once built in the background, heads and fallback tails run as one
/// session each (cache hits counted) and every frame's answer equals the chain's; the adaptive
/// loop still gets one time per head layer, adding up to the head's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_heads_and_tails_answer_as_the_chain() {
    let pkg = load_package();
    let plan = PlanSpec {
        variant: "keep050".into(),
        split: SplitSpec::After(5),
        keep_ratio: 1.0,
        codec: CodecSpec(QuantMode::Bits(8)),
        input: InputSpec::Raw,
    };
    let mut chain = EdgePipeline::new(pkg.clone(), "test".into(), TIMEOUT, None);
    let mut merged =
        EdgePipeline::new(pkg.clone(), "test".into(), TIMEOUT, None).with_merged_ranges(64 << 20);
    let frames: Vec<Frame> = samples(24)
        .into_iter()
        .enumerate()
        .map(|(i, (label, pixels))| Frame::new(i as u64, Some(label), pixels))
        .collect();
    // The first frame misses and starts both builds (head 0..5, tail 5..13); wait for them.
    merged
        .process(&frames[0], &plan, None)
        .await
        .expect("frame");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while merged.merged_stats().map_or(0, |s| s.ready) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(merged.merged_stats().map(|s| s.ready), Some(2));
    let hits_before = merged.merged_stats().map_or(0, |s| s.hits);
    for frame in &frames {
        let (want, _) = chain.process(frame, &plan, None).await.expect("chain");
        let (got, observed) = merged.process(frame, &plan, None).await.expect("merged");
        assert_eq!(got.predicted, want.predicted, "frame {}", frame.id);
        let diff = max_abs_diff(&got.probabilities, &want.probabilities);
        assert!(diff <= 1e-5, "frame {}: max |Δp| = {diff}", frame.id);
        assert_eq!(observed.head_timings.len(), 5);
    }
    let hits = merged.merged_stats().map_or(0, |s| s.hits) - hits_before;
    // 24 heads (all but every 8th) and 24 tails.
    assert!(hits >= 24 + 20, "only {hits} merged runs");
}

/// Protocol version 2 on a real connection: frames of a plan bind one context and then carry a
/// few header bytes; their answers equal those of self-contained requests; unbound contexts,
/// refused bindings, truncated bodies and version-1 messages get typed error replies and the
/// connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_frames_bind_once_and_match_whole_requests() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let client = cloud.client().await;
    let shape = pkg
        .split_tensor_shape("keep100", 6)
        .expect("shape")
        .to_vec();
    let mut head =
        LayerRunner::new(&pkg, "keep100", 0..6, &RunnerOptions::default()).expect("head");
    let params = CodecParams {
        keep_ratio: 1.0,
        mode: QuantMode::Coded(3),
    };
    for (i, (_, pixels)) in samples(4).into_iter().enumerate() {
        let input_shape: [usize; 3] = pkg.input_shape().try_into().expect("CHW input");
        let input = normalize_batch_chw_u8(&[&pixels], input_shape, pkg.normalization())
            .expect("normalise");
        let features = head.run(input.view().into_dyn()).expect("head runs");
        let payload = codec::encode(features.as_slice().expect("contiguous"), &shape, &params)
            .expect("encode");
        let req = request(&pkg, "keep100", 6, i as u64, PayloadKind::Feature, payload);
        let compact = protocol::compact_request_len(&req);
        assert!(
            protocol::request_encoded_len(&req) - compact >= 28 + 36,
            "{compact}"
        );
        let Response::Result(framed) = client.infer(&req, TIMEOUT).await.expect("reply") else {
            panic!("compact frame refused");
        };
        let whole = client
            .exchange(&protocol::encode_request(&req).expect("encode"), TIMEOUT)
            .await
            .expect("reply");
        let Ok(Response::Result(whole)) = protocol::decode_response(&whole) else {
            panic!("whole request refused");
        };
        assert_eq!(framed.frame_id, i as u64);
        assert_eq!(framed.scores, whole.scores);
    }
    assert_eq!(client.bound_contexts().await, 1);

    let expect_error = |reply: Vec<u8>, kind: ErrorKind| match protocol::decode_response(&reply) {
        Ok(Response::Error(e)) => {
            assert_eq!(e.kind, kind, "{}", e.message);
            e
        }
        other => panic!("expected a {kind} reply, got {other:?}"),
    };
    // A frame on a context this connection never bound.
    let orphan = protocol::encode_frame(&protocol::Frame {
        context_id: protocol::MAX_CONTEXTS - 1,
        frame_id: 41,
        body: vec![0; 16],
    })
    .expect("encode");
    let reply = client.exchange(&orphan, TIMEOUT).await.expect("reply");
    let e = expect_error(reply, ErrorKind::UnknownContext);
    assert_eq!(e.frame_id, Some(41));
    // Bindings the worker refuses.
    let bind = protocol::BindContext {
        context_id: 9,
        device_id: "test".into(),
        model: pkg.name().to_owned(),
        variant: "keep100".into(),
        split: 6,
        payload_kind: PayloadKind::Feature,
        coding: Some(protocol::FeatureCoding {
            keep_ratio: 0.5,
            mode: QuantMode::Bits(4),
        }),
    };
    for (wrong, kind) in [
        (
            protocol::BindContext {
                split: 99,
                ..bind.clone()
            },
            ErrorKind::BadSplit,
        ),
        (
            protocol::BindContext {
                model: "no-such-model".into(),
                ..bind.clone()
            },
            ErrorKind::UnknownModel,
        ),
        (
            protocol::BindContext {
                variant: "keep999".into(),
                ..bind.clone()
            },
            ErrorKind::UnknownVariant,
        ),
    ] {
        let reply = client
            .exchange(&protocol::encode_bind(&wrong).expect("encode"), TIMEOUT)
            .await
            .expect("reply");
        expect_error(reply, kind);
    }
    // A good binding answers with the package's shape; a body too short for it is BadPayload.
    let reply = client
        .exchange(&protocol::encode_bind(&bind).expect("encode"), TIMEOUT)
        .await
        .expect("reply");
    match protocol::decode_server_message(&reply).expect("decodes") {
        ServerMessage::ContextBound(b) => {
            assert_eq!(b.context_id, 9);
            assert_eq!(b.shape, shape.iter().map(|&d| d as u32).collect::<Vec<_>>());
        }
        other => panic!("expected the binding, got {other:?}"),
    }
    let short = protocol::encode_frame(&protocol::Frame {
        context_id: 9,
        frame_id: 42,
        body: vec![0; 20],
    })
    .expect("encode");
    let reply = client.exchange(&short, TIMEOUT).await.expect("reply");
    assert_eq!(
        expect_error(reply, ErrorKind::BadPayload).frame_id,
        Some(42)
    );
    // Binding id 9 again, to something refused, leaves it unbound.
    let refused = protocol::BindContext {
        split: 99,
        ..bind.clone()
    };
    let reply = client
        .exchange(&protocol::encode_bind(&refused).expect("encode"), TIMEOUT)
        .await
        .expect("reply");
    expect_error(reply, ErrorKind::BadSplit);
    let reply = client.exchange(&short, TIMEOUT).await.expect("reply");
    expect_error(reply, ErrorKind::UnknownContext);
    // A version-1 request: a typed error naming both versions.
    let mut v1 = protocol::encode_request(&request(
        &pkg,
        "keep100",
        6,
        43,
        PayloadKind::Feature,
        vec![],
    ))
    .expect("encode");
    v1[4] = 1;
    let reply = client.exchange(&v1, TIMEOUT).await.expect("reply");
    let e = expect_error(reply, ErrorKind::UnsupportedVersion);
    assert!(
        e.message.contains("version 1") && e.message.contains('2'),
        "{}",
        e.message
    );
    // The connection is still up and the plan's context still bound.
    let (_, pixels) = samples(1).remove(0);
    let good = request(&pkg, "keep100", 0, 44, PayloadKind::Image, pixels);
    assert!(matches!(
        client.infer(&good, TIMEOUT).await.expect("reply"),
        Response::Result(_)
    ));
    assert_eq!(client.bound_contexts().await, 2);
    client.close().await;
    cloud.stop().await;
}
