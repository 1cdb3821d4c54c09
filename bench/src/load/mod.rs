//! `jmdc-bench load`: N simulated devices against one worker over real QUIC (TLS 1.3), each with
//! its own connection, sending real encoded split tensors made from the bundled sample frames
//! (the edge's head run with ONNX Runtime, then the real codec) — closed-loop (the next frame
//! when the answer is in) or open-loop at a fixed rate per device (latency counted from the
//! frame's scheduled time, so a slow worker cannot hide behind late sends). Reports frames/s,
//! latency percentiles and errors by kind; [`bare_throughput`] runs the same tail layers in
//! ONNX Runtime directly on the same number of threads, the ceiling the worker is compared with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::cifar::CifarFile;
use jmdc_core::codec::{CodecParams, Encoder, QuantMode};
use jmdc_core::package::ModelPackage;
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::protocol::{InferRequest, PayloadKind, Response};
use jmdc_core::runner::{LayerRunner, MergedRunner, RunnerOptions};
use jmdc_edge::client::{client_config, ClientError, CloudClient};
use ndarray::ArrayD;

use crate::matrix::BenchError;

/// The plan every simulated device sends.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Model package name (under `models/packages`).
    pub model: String,
    /// Variant.
    pub variant: String,
    /// Split point: the devices send the output of layers `0..split` (0: the 8-bit image).
    pub split: usize,
    /// Codec of the split tensor (ignored at split 0).
    pub codec: CodecParams,
}

/// How the devices send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each device sends its next frame when the answer to the previous one is in.
    Closed,
    /// Each device sends this many frames per second whatever the answers (open loop).
    Open(f64),
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Simulated devices (one QUIC connection each).
    pub devices: usize,
    /// Closed or open loop.
    pub pace: Pace,
    /// Measured time.
    pub measure: Duration,
    /// Time before the measurement starts (connections made, sessions warm).
    pub warm_up: Duration,
    /// A frame not answered within this long counts as an error (`timeout`).
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Simulated devices.
    pub devices: usize,
    /// Frames answered with a result during the measured time.
    pub frames: u64,
    /// Answered frames per second.
    pub frames_per_s: f64,
    /// Latency percentiles of the answered frames, ms: 50th, 99th, and the largest.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
    /// Frames that got no result, by reason (`Overloaded`, other error kinds, `transport`,
    /// `timeout`).
    pub errors: BTreeMap<String, u64>,
}

/// ONNX Runtime loaded and the plan's package.
fn load_package(repo: &Path, plan: &LoadPlan) -> Result<ModelPackage, BenchError> {
    let invalid = |m: String| BenchError::Invalid(m);
    jmdc_core::runtime::init_onnxruntime(None).map_err(|e| invalid(e.to_string()))?;
    ModelPackage::load(&repo.join("models/packages").join(&plan.model))
        .map_err(|e| invalid(e.to_string()))
}

/// The payloads the devices cycle through: `frames` sample images through the head and codec.
pub fn prepare_payloads(
    repo: &Path,
    plan: &LoadPlan,
    frames: usize,
) -> Result<(PayloadKind, Vec<Vec<u8>>), BenchError> {
    let invalid = |m: String| BenchError::Invalid(m);
    let pkg = load_package(repo, plan)?;
    let samples = CifarFile::open(&repo.join("models/samples/cifar10-test-256.bin"))
        .map_err(|e| invalid(e.to_string()))?;
    let images: Vec<&[u8]> = samples.iter().take(frames).map(|(_, px)| &px[..]).collect();
    if plan.split == 0 {
        return Ok((
            PayloadKind::Image,
            images.iter().map(|px| px.to_vec()).collect(),
        ));
    }
    let layers = pkg.num_layers();
    if plan.split >= layers {
        return Err(invalid(format!(
            "split {} leaves no layer for the worker (the model has {layers})",
            plan.split
        )));
    }
    let mut head = LayerRunner::new(
        &pkg,
        &plan.variant,
        0..plan.split,
        &RunnerOptions::default(),
    )
    .map_err(|e| invalid(e.to_string()))?;
    let shape = pkg
        .split_tensor_shape(&plan.variant, plan.split)
        .map_err(|e| invalid(e.to_string()))?
        .to_vec();
    let mut encoder = Encoder::new();
    let mut payloads = Vec::with_capacity(images.len());
    for px in images {
        let x = normalize_batch_chw_u8(&[px], [3, 32, 32], pkg.normalization())
            .map_err(|e| invalid(e.to_string()))?
            .into_dyn();
        let t = head.run(x.view()).map_err(|e| invalid(e.to_string()))?;
        let data: Vec<f32> = t.iter().copied().collect();
        let mut out = Vec::new();
        encoder
            .encode_into(&data, &shape, &plan.codec, &mut out)
            .map_err(|e| invalid(e.to_string()))?;
        payloads.push(out);
    }
    Ok((PayloadKind::Feature, payloads))
}

/// What one device saw during the measured time.
#[derive(Debug, Default)]
struct DeviceTally {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// One frame's outcome: its latency, or the reason it got no result.
async fn send(
    client: &CloudClient,
    request: &InferRequest,
    timeout: Duration,
) -> Result<(), String> {
    match client.infer(request, timeout).await {
        Ok(Response::Result(_)) => Ok(()),
        Ok(Response::Error(e)) => Err(format!("{:?}", e.kind)),
        Err(ClientError::Timeout(_)) => Err("timeout".into()),
        Err(_) => Err("transport".into()),
    }
}

fn request(
    plan: &LoadPlan,
    device: usize,
    frame: u64,
    kind: PayloadKind,
    payload: &[u8],
) -> InferRequest {
    InferRequest {
        device_id: format!("load-{device:03}"),
        frame_id: frame,
        model: plan.model.clone(),
        variant: plan.variant.clone(),
        split: plan.split as u16,
        payload_kind: kind,
        payload: payload.to_vec(),
    }
}

/// Runs `settings.devices` devices against the worker at `addr` (trusting `ca`) and measures.
pub async fn run_load(
    addr: SocketAddr,
    ca: &Path,
    plan: &LoadPlan,
    payloads: (PayloadKind, Arc<Vec<Vec<u8>>>),
    settings: &LoadSettings,
) -> Result<LoadReport, BenchError> {
    let invalid = |m: String| BenchError::Invalid(m);
    let config = client_config(ca).map_err(|e| invalid(e.to_string()))?;
    let mut clients = Vec::with_capacity(settings.devices);
    for i in 0..settings.devices {
        let client =
            CloudClient::connect(addr, "localhost", config.clone(), Duration::from_secs(10))
                .await
                .map_err(|e| invalid(format!("device {i}: {e}")))?;
        clients.push(Arc::new(client));
    }
    let start = Instant::now() + settings.warm_up;
    let end = start + settings.measure;
    let (kind, payloads) = payloads;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().cloned().enumerate() {
        let plan = plan.clone();
        let payloads = payloads.clone();
        let pace = settings.pace;
        let timeout = settings.timeout;
        let devices = settings.devices;
        tasks.spawn(async move {
            let mut tally = DeviceTally::default();
            let mut frame = 0u64;
            match pace {
                Pace::Closed => {
                    while Instant::now() < end {
                        let payload = &payloads[(frame as usize + i) % payloads.len()];
                        let req = request(&plan, i, frame, kind, payload);
                        frame += 1;
                        let t = Instant::now();
                        let outcome = send(&client, &req, timeout).await;
                        if t < start || t >= end {
                            continue;
                        }
                        match outcome {
                            Ok(()) => tally.latencies_us.push(t.elapsed().as_micros() as u64),
                            Err(why) => *tally.errors.entry(why).or_default() += 1,
                        }
                    }
                }
                Pace::Open(fps) => {
                    let period = Duration::from_secs_f64(1.0 / fps);
                    // Devices start spread over one period, as real ones would.
                    let mut next = Instant::now() + period.mul_f64(i as f64 / devices as f64);
                    let mut inflight = tokio::task::JoinSet::new();
                    while next < end {
                        tokio::time::sleep_until(next.into()).await;
                        let scheduled = next;
                        next += period;
                        let payload = &payloads[(frame as usize + i) % payloads.len()];
                        let req = request(&plan, i, frame, kind, payload);
                        frame += 1;
                        let client = client.clone();
                        inflight.spawn(async move {
                            let outcome = send(&client, &req, timeout).await;
                            (scheduled, scheduled.elapsed(), outcome)
                        });
                        while let Some(done) = inflight.try_join_next() {
                            record(&mut tally, done, start, end);
                        }
                    }
                    while let Some(done) = inflight.join_next().await {
                        record(&mut tally, done, start, end);
                    }
                }
            }
            tally
        });
    }
    let mut latencies = Vec::new();
    let mut errors = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let tally = done.map_err(|e| invalid(format!("device task: {e}")))?;
        latencies.extend(tally.latencies_us);
        for (k, n) in tally.errors {
            *errors.entry(k).or_default() += n;
        }
    }
    for client in clients {
        client.close().await;
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1e3
    };
    Ok(LoadReport {
        devices: settings.devices,
        frames: latencies.len() as u64,
        frames_per_s: latencies.len() as f64 / settings.measure.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies.last().map_or(f64::NAN, |&us| us as f64 / 1e3),
        errors,
    })
}

type Done = Result<(Instant, Duration, Result<(), String>), tokio::task::JoinError>;

fn record(tally: &mut DeviceTally, done: Done, start: Instant, end: Instant) {
    let Ok((scheduled, latency, outcome)) = done else {
        *tally.errors.entry("task".into()).or_default() += 1;
        return;
    };
    if scheduled < start || scheduled >= end {
        return;
    }
    match outcome {
        Ok(()) => tally.latencies_us.push(latency.as_micros() as u64),
        Err(why) => *tally.errors.entry(why).or_default() += 1,
    }
}

/// One run of the tail on a tensor.
type TailRun = dyn FnMut(&ArrayD<f32>) -> Result<(), String>;

/// Which sessions [`bare_throughput`] runs the tail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailSessions {
    /// One session per layer (what the worker runs today).
    Chain,
    /// One merged session for the range.
    Merged,
}

/// Frames per second of the plan's tail (`split..L`) in ONNX Runtime directly: `threads` threads,
/// each with its own session(s) and one intra-op thread, each running the decoded tensors of the
/// payloads one after another for `measure` in batches of `batch` frames (no network, no codec).
pub fn bare_throughput(
    repo: &Path,
    plan: &LoadPlan,
    threads: usize,
    sessions: TailSessions,
    batch: usize,
    measure: Duration,
) -> Result<f64, BenchError> {
    let invalid = |m: String| BenchError::Invalid(m);
    let pkg = Arc::new(load_package(repo, plan)?);
    let layers = pkg.num_layers();
    let one = tail_input(repo, &pkg, plan)?;
    let batch = batch.max(1);
    let views = vec![one.view(); batch];
    let input = ndarray::concatenate(ndarray::Axis(0), &views)
        .map_err(|e| invalid(format!("cannot stack a batch of {batch}: {e}")))?;
    let opts = RunnerOptions {
        intra_op_threads: Some(1),
        ..RunnerOptions::default()
    };
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let (pkg, input, opts, plan) = (pkg.clone(), input.clone(), opts.clone(), plan.clone());
        handles.push(std::thread::spawn(move || -> Result<u64, String> {
            let range = plan.split..layers;
            let mut run: Box<TailRun> = match sessions {
                TailSessions::Chain => {
                    let mut r = LayerRunner::new(&pkg, &plan.variant, range, &opts)
                        .map_err(|e| e.to_string())?;
                    Box::new(move |x| r.run(x.view()).map(drop).map_err(|e| e.to_string()))
                }
                TailSessions::Merged => {
                    let mut r = MergedRunner::new(&pkg, &plan.variant, range, &opts)
                        .map_err(|e| e.to_string())?;
                    Box::new(move |x| r.run(x.view()).map(drop).map_err(|e| e.to_string()))
                }
            };
            for _ in 0..20 {
                run(&input)?;
            }
            let end = Instant::now() + measure;
            let mut n = 0u64;
            while Instant::now() < end {
                run(&input)?;
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut total = 0u64;
    for h in handles {
        total += h
            .join()
            .map_err(|_| invalid("a bare ONNX Runtime thread panicked".into()))?
            .map_err(invalid)?;
    }
    Ok((total * batch as u64) as f64 / measure.as_secs_f64())
}

/// The tensor entering the tail for the first sample image (the image itself at split 0).
fn tail_input(repo: &Path, pkg: &ModelPackage, plan: &LoadPlan) -> Result<ArrayD<f32>, BenchError> {
    let invalid = |m: String| BenchError::Invalid(m);
    let samples = CifarFile::open(&repo.join("models/samples/cifar10-test-256.bin"))
        .map_err(|e| invalid(e.to_string()))?;
    let (_, px) = samples
        .get(0)
        .ok_or_else(|| invalid("no sample image".into()))?;
    let x = normalize_batch_chw_u8(&[&px[..]], [3, 32, 32], pkg.normalization())
        .map_err(|e| invalid(e.to_string()))?
        .into_dyn();
    if plan.split == 0 {
        return Ok(x);
    }
    let mut head = LayerRunner::new(pkg, &plan.variant, 0..plan.split, &RunnerOptions::default())
        .map_err(|e| invalid(e.to_string()))?;
    head.run(x.view()).map_err(|e| invalid(e.to_string()))
}

/// Parses a codec name of the calibration table (`int4`, `f16`, `int3ac`, …) with ρ.
pub fn codec(name: &str, keep_ratio: f32) -> Result<CodecParams, BenchError> {
    let mode: QuantMode = jmdc_core::calibration::parse_codec(name).map_err(BenchError::Invalid)?;
    Ok(CodecParams { keep_ratio, mode })
}
