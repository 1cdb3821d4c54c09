//! Cloud-only with a JPEG input, end to end on loopback: the edge pipeline JPEG-encodes each frame
//! (`codec=jpeg90`), the real worker decodes and normalises it, over real QUIC + TLS, on the 256
//! bundled CIFAR-10 (JPEG copy) samples. Malformed JPEG payloads get typed errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{packages_dir, sample_file, Cloud};
use jmdc_core::cifar::CifarFile;
use jmdc_core::jpeg;
use jmdc_core::package::ModelPackage;
use jmdc_core::protocol::{ErrorKind, InferRequest, PayloadKind, Response};
use jmdc_edge::pipeline::{EdgePipeline, Frame};
use jmdc_edge::plan_spec::PlanSpec;
use jmdc_edge::stats::FrameRecord;

const TIMEOUT: Duration = Duration::from_secs(10);

fn load_package() -> Arc<ModelPackage> {
    common::init_runtime();
    Arc::new(ModelPackage::load(&packages_dir().join("alexnet-cifar10")).expect("package loads"))
}

fn frames() -> Vec<Frame> {
    let file = CifarFile::open(&sample_file()).expect("sample file");
    file.iter()
        .enumerate()
        .map(|(i, (label, px))| Frame::new(i as u64, Some(label), px.to_vec()))
        .collect()
}

/// `text` over the base plan `keep100`, cloud-only, raw image.
fn plan(text: &str) -> PlanSpec {
    let base: PlanSpec =
        toml::from_str("variant = \"keep100\"\nsplit = \"cloud-only\"\n").expect("plan toml");
    PlanSpec::parse_override(text, &base).expect("plan")
}

async fn run(pkg: &Arc<ModelPackage>, cloud: &Cloud, plan: &PlanSpec) -> Vec<FrameRecord> {
    let client = cloud.client().await;
    let mut pipeline = EdgePipeline::new(pkg.clone(), "test".into(), TIMEOUT, None);
    let mut out = Vec::new();
    for frame in frames() {
        let (record, _) = pipeline
            .process(&frame, plan, Some(&client))
            .await
            .expect("frame");
        assert!(!record.fallback, "frame {} fell back to the edge", frame.id);
        out.push(record);
    }
    client.close().await;
    out
}

fn mean(xs: impl Iterator<Item = u64>) -> f64 {
    let v: Vec<u64> = xs.collect();
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

/// jpeg90 gives the raw cloud-only class for most of the 256 frames and top-1 within 2 points;
/// the payload is about a third of the raw image. Prints bytes/frame and times for q90/q75/q50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg90_cloud_only_matches_raw_cloud_only() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let raw = run(&pkg, &cloud, &plan("split=cloud-only")).await;
    assert_eq!(raw[0].plan, "keep100 cloud-only (u8 image)");
    let n = raw.len();
    assert_eq!(n, 256);
    let top1 = |r: &[FrameRecord]| {
        r.iter().filter(|r| r.correct() == Some(true)).count() as f64 / n as f64 * 100.0
    };
    let raw_top1 = top1(&raw);
    println!(
        "raw:    top-1 {raw_top1:.2} %, {:.1} B/frame (request), encode {:.1} µs, worker {:.1} µs",
        mean(raw.iter().map(|r| r.bytes as u64)),
        mean(raw.iter().map(|r| r.encode_us)),
        mean(raw.iter().map(|r| r.cloud_us)),
    );
    for q in [90u8, 75, 50] {
        let recs = run(&pkg, &cloud, &plan(&format!("codec=jpeg{q}"))).await;
        assert_eq!(recs[0].plan, format!("keep100 cloud-only jpeg q{q}"));
        let same = recs
            .iter()
            .zip(&raw)
            .filter(|(j, r)| j.predicted == r.predicted)
            .count();
        let t = top1(&recs);
        let bytes = mean(recs.iter().map(|r| r.bytes as u64));
        println!(
            "jpeg{q}: top-1 {t:.2} % ({:+.2} points), same class as raw {same}/{n}, \
             {bytes:.1} B/frame (request), encode {:.1} µs, worker {:.1} µs",
            t - raw_top1,
            mean(recs.iter().map(|r| r.encode_us)),
            mean(recs.iter().map(|r| r.cloud_us)),
        );
        // Every request is the JPEG plus the same header as the raw one (3,072 B payload).
        let header = raw[0].bytes - 3072;
        assert!(recs
            .iter()
            .all(|r| r.bytes > header + 200 && r.bytes < 2000));
        if q == 90 {
            assert!(
                same * 100 >= n * 90,
                "jpeg90 agrees with raw on {same}/{n} only"
            );
            assert!(
                (t - raw_top1).abs() <= 2.0,
                "jpeg90 top-1 {t:.2} % vs raw {raw_top1:.2} %"
            );
            assert!(bytes < 0.45 * mean(raw.iter().map(|r| r.bytes as u64)));
        }
    }
    cloud.stop().await;
}

/// A JPEG that does not decode, has the wrong size, or comes with a split other than 0 is a
/// typed error reply; the connection stays up and a good JPEG is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_jpeg_payloads_get_bad_payload() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let client = cloud.client().await;
    let pixels = frames().remove(0).pixels;
    let good = jpeg::encode_chw(&pixels, [3, 32, 32], 90).expect("encode");
    let small = jpeg::encode_chw(&vec![128u8; 3 * 16 * 16], [3, 16, 16], 90).expect("encode");
    let mut huge = good.clone();
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("SOF0");
    huge[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]); // 65,000 × 65,000
    let req = |frame_id: u64, split: u16, payload: Vec<u8>| InferRequest {
        device_id: "test".into(),
        frame_id,
        model: pkg.name().to_owned(),
        variant: "keep100".into(),
        split,
        payload_kind: PayloadKind::Jpeg,
        payload,
    };
    for (id, split, payload, needle) in [
        (1, 0, b"not a jpeg".to_vec(), "not a decodable JPEG"),
        (2, 0, vec![], "not a decodable JPEG"),
        (3, 0, good[..40].to_vec(), "not a decodable JPEG"),
        (4, 0, small, "JPEG is 16x16, the model input is 32x32"),
        (5, 0, huge, "JPEG is 65000x65000"),
        (6, 6, good.clone(), "needs split 0"),
    ] {
        match client.infer(&req(id, split, payload), TIMEOUT).await {
            Ok(Response::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::BadPayload, "frame {id}: {e:?}");
                assert_eq!(e.frame_id, Some(id));
                assert!(e.message.contains(needle), "frame {id}: {}", e.message);
            }
            other => panic!("frame {id}: expected a BadPayload reply, got {other:?}"),
        }
    }
    match client.infer(&req(7, 0, good), TIMEOUT).await {
        Ok(Response::Result(r)) => {
            assert_eq!(r.frame_id, 7);
            assert_eq!(r.scores.len(), pkg.classes().len());
            assert!(r.decode_us > 0 || r.cloud_compute_us > 0);
        }
        other => panic!("good JPEG refused after bad ones: {other:?}"),
    }
    client.close().await;
    cloud.stop().await;
}

/// `forward_jpeg`: frames whose source delivered a JPEG at the model size send those very bytes;
/// the worker decodes them to exactly the frame's pixels, so every class equals raw cloud-only on
/// the same pixels. Without `forward_jpeg` the same frames are re-encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_jpegs_at_model_size_are_forwarded_unchanged() {
    let pkg = load_package();
    let cloud = Cloud::start(64).await;
    let client = cloud.client().await;
    // As a folder of 32×32 JPEG files at quality 60 would deliver them.
    let frames: Vec<Frame> = frames()
        .into_iter()
        .take(64)
        .map(|f| {
            let jpg = jpeg::encode_chw(&f.pixels, [3, 32, 32], 60).expect("encode");
            let pixels = jpeg::decode_chw(&jpg, [3, 32, 32]).expect("decode");
            Frame::new(f.id, f.label, pixels).with_jpeg(jpg)
        })
        .collect();
    let mut pipeline = EdgePipeline::new(pkg.clone(), "test".into(), TIMEOUT, None);
    let raw = plan("split=cloud-only");
    let forward = plan("codec=jpeg90,forward_jpeg=true");
    let encode = plan("codec=jpeg90");
    assert_eq!(
        forward.to_string(),
        "keep100 cloud-only jpeg q90 (source JPEGs forwarded)"
    );
    let mut header = None;
    for f in &frames {
        let (r, _) = pipeline.process(f, &raw, Some(&client)).await.expect("raw");
        let (fw, _) = pipeline
            .process(f, &forward, Some(&client))
            .await
            .expect("forward");
        let (en, _) = pipeline
            .process(f, &encode, Some(&client))
            .await
            .expect("encode");
        assert!(!r.fallback && !fw.fallback && !en.fallback);
        let h = *header.get_or_insert(r.bytes - 3072);
        let source = f.jpeg.as_deref().expect("jpeg").len();
        assert_eq!(fw.bytes, h + source, "frame {}: forwarded unchanged", f.id);
        assert_ne!(en.bytes, h + source, "frame {}: re-encoded at q90", f.id);
        assert_eq!(fw.predicted, r.predicted, "frame {}", f.id);
        assert_eq!(
            fw.score, r.score,
            "frame {}: same pixels, same logits",
            f.id
        );
    }
    // A frame without a source JPEG is encoded at the plan's quality.
    let plain = Frame::new(99, None, frames[0].pixels.clone());
    let (p, _) = pipeline
        .process(&plain, &forward, Some(&client))
        .await
        .expect("plain");
    let (e, _) = pipeline
        .process(&plain, &encode, Some(&client))
        .await
        .expect("encode");
    assert_eq!(p.bytes, e.bytes);
    client.close().await;
    cloud.stop().await;
}
