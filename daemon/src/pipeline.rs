//! One frame through the edge: normalise, run the head, encode the split tensor, send it, await the
//! cloud's answer — or finish the frame on the edge when the cloud cannot.
//!
//! The plan is given per frame, so an adaptive loop can change it between frames; one ONNX Runtime
//! session chain per variant (all layers) serves every split point through `run_range`. With a
//! merged-range cache ([`EdgePipeline::with_merged_ranges`]) the head `0..s` and the fallback tail
//! `s..L` run as one session each once built (in the background, on their first use); every
//! [`PROFILE_EVERY`]-th head still runs as the chain, whose per-layer times keep the shares by
//! which a merged run's time is split among its layers for the adaptive loop's profile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jmdc_core::codec::Encoder;
use jmdc_core::jpeg::JpegEncoder;
use jmdc_core::package::ModelPackage;
use jmdc_core::preprocess;
use jmdc_core::protocol::{self, InferRequest, PayloadKind, Response};
use jmdc_core::runner::{LayerRunner, MergedCache, MergedCacheConfig, RunnerOptions};
use ndarray::ArrayD;
use tracing::warn;

use crate::client::CloudClient;
use crate::emulation::EdgeSpeed;
use crate::plan_spec::{InputSpec, PlanSpec};
use crate::stats::FrameRecord;

/// Errors that stop the pipeline (not per-frame cloud failures, which fall back to the edge).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The plan does not fit the package (variant, split, codec).
    #[error("plan: {0}")]
    Plan(String),
    /// The model failed: a session could not be built or a layer did not run.
    #[error("model: {0}")]
    Model(String),
}

pub use crate::frame::Frame;

/// What the adaptive loop learns from one frame besides its record.
#[derive(Debug, Clone, Default)]
pub struct FrameObservation {
    /// Wall time of each head layer (index 0 = layer 0), without emulated slowdown.
    pub head_timings: Vec<Duration>,
    /// The head's whole time as the emulated device spent it (= wall time when not emulated).
    pub head_emulated: Duration,
    /// Round trip of the request, when the cloud answered.
    pub round_trip: Option<Duration>,
    /// Worker compute time for layers `split..L`, when the cloud answered.
    pub cloud_compute: Option<Duration>,
    /// Worker decode + queue + compute time, when the cloud answered.
    pub server_time: Option<Duration>,
    /// The worker's compute time of each layer `split..L`, µs (its per-layer cloud profile).
    pub cloud_layer_us: Vec<u32>,
    /// True when a request was sent and got no answer (timeout, lost connection); a refusal by
    /// the worker is an answer.
    pub cloud_failed: bool,
}

/// Every this many heads run as the chain of layer sessions (per-layer times), the others merged.
pub const PROFILE_EVERY: u64 = 8;

/// The longest [`EdgePipeline::prepare_plan`] waits for a plan's merged ranges.
pub const MERGED_WAIT: Duration = Duration::from_secs(10);

/// Runs of a new session chain before it serves frames.
const WARM_UP_RUNS: usize = 3;

/// Timed runs of a new session chain that give the emulation its reference layer times.
const REFERENCE_RUNS: usize = 10;

/// Sessions of one variant, shared between the head (main loop) and edge fallbacks (frame tasks).
type SharedRunner = Arc<VariantRunner>;

/// One variant's session chain and, under emulation, its layers' warm times.
#[derive(Debug)]
struct VariantRunner {
    runner: Mutex<LayerRunner>,
    /// Shortest time of each layer over [`REFERENCE_RUNS`] back-to-back runs after the warm-up
    /// (empty when not emulated): what the emulation multiplies, so that this host's cache
    /// noise is not (`crate::emulation`). The minimum, not the median: one busy moment while the
    /// sessions were created must not slow the emulated device for the whole run. Fixed once
    /// measured: a minimum kept over every frame falls with the number of frames, so long runs
    /// emulated a faster device (in the benchmark the loop, measured after 256 warm-up frames, ran
    /// the oracle's own plan 7–15 % faster than that plan run fixed for 64 frames).
    reference: Vec<Duration>,
    /// Each layer's recent chain time, µs (EWMA): how a merged run's time is shared among the
    /// layers it ran.
    shares: Mutex<Vec<f64>>,
}

/// Weight of the newest chain time in [`VariantRunner::shares`].
const SHARE_ALPHA: f64 = 0.2;

impl VariantRunner {
    /// Learns per-layer shares from a chain run of `start..` (`timings[0]` = layer `start`).
    fn learn_shares(&self, start: usize, timings: &[Duration]) {
        if let Ok(mut shares) = self.shares.lock() {
            for (share, t) in shares.iter_mut().skip(start).zip(timings) {
                let us = t.as_secs_f64() * 1e6;
                *share = if *share > 0.0 {
                    *share + SHARE_ALPHA * (us - *share)
                } else {
                    us
                };
            }
        }
    }

    /// A merged run of `layers` that took `total`, split among them by their chain shares.
    fn split_time(&self, layers: std::ops::Range<usize>, total: Duration) -> Vec<Duration> {
        let n = layers.len();
        let shares: Vec<f64> = self
            .shares
            .lock()
            .ok()
            .and_then(|s| s.get(layers).map(<[f64]>::to_vec))
            .unwrap_or_default();
        let sum: f64 = shares.iter().sum();
        if shares.len() != n || sum.is_nan() || sum <= 0.0 {
            return vec![total.div_f64(n.max(1) as f64); n];
        }
        shares.iter().map(|s| total.mul_f64(s / sum)).collect()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, LayerRunner>, PipelineError> {
        self.runner
            .lock()
            .map_err(|_| PipelineError::Model("runner lock poisoned".into()))
    }

    /// The reference time of `layers`, when there is one.
    fn reference(&self, layers: std::ops::Range<usize>) -> Option<Duration> {
        self.reference
            .get(layers)
            .filter(|r| !r.is_empty())
            .map(|r| r.iter().sum())
    }
}

/// The edge side: sessions per variant, an encoder, the request builder.
///
/// [`start`](Self::start) runs the head and encodes on the caller's task (the CPU-bound part, one frame
/// at a time), and returns a [`PendingFrame`] that finishes the frame — cloud round trip or edge
/// fallback — independently, so several frames can be in flight.
#[derive(Debug)]
pub struct EdgePipeline {
    package: Arc<ModelPackage>,
    options: RunnerOptions,
    runners: HashMap<String, SharedRunner>,
    device_id: String,
    timeout: Duration,
    encoder: Encoder,
    jpeg: JpegEncoder,
    buffers: Arc<BufferPool>,
    /// Emulated edge speed: every piece of edge compute is stretched to `factor ×` its real time.
    speed: EdgeSpeed,
    /// Merged head and tail ranges (absent: chains only).
    merged: Option<Arc<MergedCache>>,
    /// Heads run so far (every [`PROFILE_EVERY`]-th runs as the chain).
    heads: u64,
}

/// Encode buffers handed out per frame and returned when the request is done (no allocation per frame
/// in steady state).
#[derive(Debug, Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut v) = self.0.lock() {
            if v.len() < 16 {
                v.push(buf);
            }
        }
    }
}

/// A frame whose head has run: what is left to do to finish it.
#[derive(Debug)]
pub struct PendingFrame {
    record: FrameRecord,
    observation: FrameObservation,
    started: Instant,
    edge_layers: usize,
    total_layers: usize,
    split_tensor: ArrayD<f32>,
    /// The request to send (`None` when the frame finishes on the edge without asking).
    request: Option<InferRequest>,
    runner: SharedRunner,
    merged: Option<Arc<MergedCache>>,
    package: Arc<ModelPackage>,
    variant: String,
    buffers: Arc<BufferPool>,
    timeout: Duration,
    speed: EdgeSpeed,
}

impl EdgePipeline {
    /// A pipeline over `package`; sessions are created on first use of a variant (or by
    /// [`prepare`](Self::prepare)).
    pub fn new(
        package: Arc<ModelPackage>,
        device_id: String,
        timeout: Duration,
        threads: Option<usize>,
    ) -> Self {
        Self {
            package,
            options: RunnerOptions {
                intra_op_threads: threads,
                ..RunnerOptions::default()
            },
            runners: HashMap::new(),
            device_id,
            timeout,
            encoder: Encoder::new(),
            jpeg: JpegEncoder::new(),
            buffers: Arc::new(BufferPool::default()),
            speed: EdgeSpeed::default(),
            merged: None,
            heads: 0,
        }
    }

    /// The merged-range cache's counters (`None` without one).
    pub fn merged_stats(&self) -> Option<jmdc_core::runner::MergedCacheStats> {
        self.merged.as_ref().map(|c| c.stats())
    }

    /// Runs heads and fallback tails as merged ranges, kept within `budget_bytes` (0: chains
    /// only); call it before the first frame or `prepare`. Without a thread for the builder the
    /// pipeline stays on chains (logged).
    pub fn with_merged_ranges(mut self, budget_bytes: usize) -> Self {
        if budget_bytes == 0 {
            self.merged = None;
            return self;
        }
        let config = MergedCacheConfig {
            sessions: 1,
            budget_bytes,
            options: self.options.clone(),
        };
        match MergedCache::new(config) {
            Ok(cache) => self.merged = Some(Arc::new(cache)),
            Err(e) => {
                warn!(error = %e, "cannot start the merged-range builder; layers run as chains")
            }
        }
        self
    }

    /// Stretches all edge compute (head, encoding, fallback tail) to `speed.factor()` × its real
    /// time, to emulate a slower device on a fast machine (`crate::emulation`). The extra time is
    /// really spent (spinning), so every measurement sees it.
    pub fn with_speed(mut self, speed: EdgeSpeed) -> Self {
        self.speed = speed;
        self
    }

    /// Changes the emulated edge speed (live reload).
    pub fn set_speed(&mut self, speed: EdgeSpeed) {
        self.speed = speed;
    }

    /// Changes the per-frame cloud deadline (live reload).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The emulated edge speed.
    pub fn speed(&self) -> EdgeSpeed {
        self.speed
    }

    /// The package this pipeline runs.
    pub fn package(&self) -> &Arc<ModelPackage> {
        &self.package
    }

    /// Creates the sessions of `variant` now (start-up cost instead of first-frame cost).
    pub fn prepare(&mut self, variant: &str) -> Result<(), PipelineError> {
        self.runner(variant).map(|_| ())
    }

    /// [`prepare`](Self::prepare) for `plan`'s variant, and with merged ranges its head and
    /// fallback tail built before the first frame (waiting at most [`MERGED_WAIT`]; the
    /// frames after run as chains until they are ready).
    pub fn prepare_plan(&mut self, plan: &PlanSpec) -> Result<(), PipelineError> {
        self.prepare(&plan.variant)?;
        let Some(cache) = self.merged.clone() else {
            return Ok(());
        };
        let layers = self.package.num_layers();
        let split = plan.edge_layers(layers).map_err(PipelineError::Plan)?;
        let ranges: Vec<_> = [0..split, split..layers]
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect();
        for range in &ranges {
            cache.prepare(&self.package, &plan.variant, range.clone());
        }
        let deadline = Instant::now() + MERGED_WAIT;
        tokio::task::block_in_place(|| {
            while Instant::now() < deadline
                && !ranges
                    .iter()
                    .all(|r| cache.is_settled(self.package.name(), &plan.variant, r.clone()))
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Ok(())
    }

    fn runner(&mut self, variant: &str) -> Result<SharedRunner, PipelineError> {
        if let Some(runner) = self.runners.get(variant) {
            return Ok(runner.clone());
        }
        let layers = self.package.num_layers();
        let mut runner = LayerRunner::new(&self.package, variant, 0..layers, &self.options)
            .map_err(|e| PipelineError::Model(e.to_string()))?;
        // A fresh ONNX Runtime session is several times slower on its first runs (allocations,
        // kernel set-up); warm it so the first frames, and the timings the adaptive loop learns
        // from them, are not skewed.
        let mut shape = vec![1];
        shape.extend_from_slice(self.package.input_shape());
        let zeros = ArrayD::<f32>::zeros(shape);
        for _ in 0..WARM_UP_RUNS {
            tokio::task::block_in_place(|| runner.run_range(0..layers, zeros.view()))
                .map_err(|e| PipelineError::Model(e.to_string()))?;
        }
        let reference: Vec<Duration> = if self.speed.is_emulated() {
            let mut shortest = vec![Duration::MAX; layers];
            for _ in 0..REFERENCE_RUNS {
                let (_, timings) =
                    tokio::task::block_in_place(|| runner.run_range_timed(0..layers, zeros.view()))
                        .map_err(|e| PipelineError::Model(e.to_string()))?;
                for (s, t) in shortest.iter_mut().zip(timings) {
                    *s = (*s).min(t);
                }
            }
            shortest
        } else {
            Vec::new()
        };
        // Where merged heads need shares to split their time by: the reference when there is
        // one, else one timed run (chain heads refine them either way).
        let share_times = if self.merged.is_none() {
            Vec::new()
        } else if reference.is_empty() {
            tokio::task::block_in_place(|| runner.run_range_timed(0..layers, zeros.view()))
                .map_err(|e| PipelineError::Model(e.to_string()))?
                .1
        } else {
            reference.clone()
        };
        let shares = share_times.iter().map(|t| t.as_secs_f64() * 1e6).collect();
        let runner = Arc::new(VariantRunner {
            runner: Mutex::new(runner),
            reference,
            shares: Mutex::new(shares),
        });
        self.runners.insert(variant.to_owned(), runner.clone());
        Ok(runner)
    }

    /// Processes one frame with `plan` and waits for it. Cloud problems never lose the frame: it
    /// is finished on the edge and marked `fallback`.
    pub async fn process(
        &mut self,
        frame: &Frame,
        plan: &PlanSpec,
        cloud: Option<&CloudClient>,
    ) -> Result<(FrameRecord, FrameObservation), PipelineError> {
        let pending = self.start(frame, plan, cloud.is_some()).await?;
        pending.finish(cloud).await
    }

    /// Runs the head of `frame` under `plan` and encodes the split tensor (the CPU-bound part, on
    /// the caller's task). `cloud_available` false means the frame is finished on the edge
    /// (marked fallback when the plan wanted the cloud) without encoding.
    pub async fn start(
        &mut self,
        frame: &Frame,
        plan: &PlanSpec,
        cloud_available: bool,
    ) -> Result<PendingFrame, PipelineError> {
        let started = Instant::now();
        let total_layers = self.package.num_layers();
        let edge_layers = plan
            .edge_layers(total_layers)
            .map_err(PipelineError::Plan)?;
        let mut record = FrameRecord {
            frame_id: frame.id,
            label: frame.label,
            origin: frame.origin.clone(),
            plan: plan.to_string(),
            queue_us: micros(started.saturating_duration_since(frame.captured)),
            ..Default::default()
        };
        let mut observation = FrameObservation::default();
        let input = preprocess::normalize_chw_u8(
            &frame.pixels,
            image_shape(&self.package)?,
            self.package.normalization(),
        )
        .map_err(|e| PipelineError::Model(e.to_string()))?
        .into_dyn();
        let runner = self.runner(&plan.variant)?;

        let edge_start = Instant::now();
        let speed = self.speed;
        let split_tensor = if edge_layers > 0 {
            self.heads += 1;
            let profile = self.heads % PROFILE_EVERY == 1;
            let merged = match (&self.merged, profile) {
                (Some(cache), false) => {
                    cache.checkout(&self.package, &plan.variant, 0..edge_layers)
                }
                (Some(cache), true) => {
                    // Runs as the chain, but has the merged head built for the frames after.
                    cache.prepare(&self.package, &plan.variant, 0..edge_layers);
                    None
                }
                (None, _) => None,
            };
            let ((out, timings), emulated) = tokio::task::block_in_place(|| {
                let watch = speed.start();
                let ran = match merged {
                    Some(mut session) => {
                        let t0 = Instant::now();
                        let out = session
                            .run(input.view())
                            .map_err(|e| PipelineError::Model(e.to_string()))?;
                        let timings = runner.split_time(0..edge_layers, t0.elapsed());
                        (out, timings)
                    }
                    None => {
                        let ran = runner
                            .lock()?
                            .run_range_timed(0..edge_layers, input.view())
                            .map_err(|e| PipelineError::Model(e.to_string()))?;
                        runner.learn_shares(0, &ran.1);
                        ran
                    }
                };
                let emulated = speed.finish_with_reference(watch, runner.reference(0..edge_layers));
                Ok::<_, PipelineError>((ran, emulated))
            })?;
            observation.head_timings = timings;
            observation.head_emulated = emulated;
            out
        } else {
            input
        };
        record.edge_us = micros(edge_start.elapsed());

        let request = if edge_layers < total_layers && cloud_available {
            self.build_request(frame, plan, edge_layers, &split_tensor, &mut record)
        } else {
            None
        };
        Ok(PendingFrame {
            record,
            observation,
            started,
            edge_layers,
            total_layers,
            split_tensor,
            request,
            runner,
            merged: self.merged.clone(),
            package: self.package.clone(),
            variant: plan.variant.clone(),
            buffers: self.buffers.clone(),
            timeout: self.timeout,
            speed: self.speed,
        })
    }

    /// Encodes the split tensor into a request; `None` (finish on the edge) when it cannot.
    fn build_request(
        &mut self,
        frame: &Frame,
        plan: &PlanSpec,
        edge_layers: usize,
        split_tensor: &ArrayD<f32>,
        record: &mut FrameRecord,
    ) -> Option<InferRequest> {
        let encode_start = Instant::now();
        let speed = self.speed;
        let (payload_kind, payload) = if edge_layers == 0 {
            match plan.input {
                InputSpec::Raw => (PayloadKind::Image, frame.pixels.clone()),
                InputSpec::JpegForward(_) if frame.jpeg.is_some() => {
                    // The source's own JPEG, already at the model input size: sent unchanged.
                    let mut buf = self.buffers.take();
                    buf.extend_from_slice(frame.jpeg.as_deref().unwrap_or_default());
                    (PayloadKind::Jpeg, buf)
                }
                InputSpec::Jpeg(quality) | InputSpec::JpegForward(quality) => {
                    let shape = image_shape(&self.package).ok()?;
                    let mut buf = self.buffers.take();
                    let jpeg = &mut self.jpeg;
                    let encoded = tokio::task::block_in_place(|| {
                        let watch = speed.start();
                        let r = jpeg.encode_into(&frame.pixels, shape, quality, &mut buf);
                        speed.finish(watch);
                        r
                    });
                    if let Err(e) = encoded {
                        warn!(frame = frame.id, error = %e, "cannot encode JPEG; finishing on edge");
                        self.buffers.give(buf);
                        return None;
                    }
                    (PayloadKind::Jpeg, buf)
                }
            }
        } else {
            let shape = &split_tensor.shape()[1..];
            let data = split_tensor.as_slice()?;
            let mut buf = self.buffers.take();
            let encoder = &mut self.encoder;
            let encoded = tokio::task::block_in_place(|| {
                let watch = speed.start();
                let r = encoder.encode_into(data, shape, &plan.codec_params(), &mut buf);
                speed.finish(watch);
                r
            });
            if let Err(e) = encoded {
                warn!(frame = frame.id, error = %e, "cannot encode split tensor; finishing on edge");
                self.buffers.give(buf);
                return None;
            }
            (PayloadKind::Feature, buf)
        };
        record.encode_us = micros(encode_start.elapsed());
        let request = InferRequest {
            device_id: self.device_id.clone(),
            frame_id: frame.id,
            model: self.package.name().to_owned(),
            variant: plan.variant.clone(),
            split: u16::try_from(edge_layers).ok()?,
            payload_kind,
            payload,
        };
        record.bytes = protocol::compact_request_len(&request);
        Some(request)
    }
}

impl PendingFrame {
    /// The frame this is.
    pub fn frame_id(&self) -> u64 {
        self.record.frame_id
    }

    /// Stamps the latency the optimizer predicted for this frame's plan.
    pub fn set_predicted(&mut self, prediction: Option<&crate::adaptive::Prediction>) {
        self.record.set_prediction(prediction);
    }

    /// True when finishing needs the cloud (a request was built).
    pub fn wants_cloud(&self) -> bool {
        self.request.is_some()
    }

    /// Finishes the frame: asks `cloud` (when a request was built and a client is given), else or
    /// on any cloud failure runs the tail on the edge. Never loses the frame.
    pub async fn finish(
        mut self,
        cloud: Option<&CloudClient>,
    ) -> Result<(FrameRecord, FrameObservation), PipelineError> {
        let scores = if self.edge_layers >= self.total_layers {
            self.split_tensor.iter().copied().collect()
        } else {
            let answer = match (self.request.take(), cloud) {
                (Some(request), Some(cloud)) => self.ask_cloud(request, cloud).await,
                (Some(request), None) => {
                    self.give_back(request);
                    None
                }
                (None, _) => None,
            };
            match answer {
                Some(scores) => scores,
                None => {
                    self.record.fallback = true;
                    let finish = Instant::now();
                    let scores = self.finish_on_edge().await?;
                    self.record.edge_us += micros(finish.elapsed());
                    scores
                }
            }
        };
        let (predicted, score) = argmax(&scores);
        self.record.predicted = predicted;
        self.record.score = score;
        self.record.probabilities = softmax(&scores);
        self.record.probability = self
            .record
            .probabilities
            .get(predicted)
            .copied()
            .unwrap_or(0.0);
        self.record.total_us = micros(self.started.elapsed());
        Ok((self.record, self.observation))
    }

    fn give_back(&self, request: InferRequest) {
        if matches!(
            request.payload_kind,
            PayloadKind::Feature | PayloadKind::Jpeg
        ) {
            self.buffers.give(request.payload);
        }
    }

    /// Sends the request; `None` when the cloud could not answer.
    async fn ask_cloud(&mut self, request: InferRequest, cloud: &CloudClient) -> Option<Vec<f32>> {
        // The frame's own round trip: a plan's first frame on a connection also waits for its
        // context binding, which is not this frame's transfer.
        let response = cloud.infer_measured(&request, self.timeout).await;
        let frame = request.frame_id;
        self.give_back(request);
        match response {
            Ok((Response::Result(result), _)) if result.scores.iter().any(|s| !s.is_finite()) => {
                warn!(
                    frame,
                    "cloud answered scores that are not finite; finishing on edge"
                );
                None
            }
            Ok((Response::Result(result), round_trip)) => {
                let server_us = result.cloud_compute_us + result.decode_us + result.queue_us;
                self.record.cloud_us = server_us;
                self.record.network_us = micros(round_trip).saturating_sub(server_us);
                self.observation.round_trip = Some(round_trip);
                self.observation.cloud_compute =
                    Some(Duration::from_micros(result.cloud_compute_us));
                self.observation.server_time = Some(Duration::from_micros(server_us));
                self.observation.cloud_layer_us = result.layer_us;
                Some(result.scores)
            }
            Ok((Response::Error(reply), _)) => {
                // The worker answered (overloaded, unknown model, …): the connection is fine.
                warn!(frame, kind = ?reply.kind, message = %reply.message, "cloud refused frame; finishing on edge");
                None
            }
            Err(e) => {
                warn!(frame, error = %e, "cloud unavailable; finishing on edge");
                self.observation.cloud_failed = true;
                None
            }
        }
    }

    async fn finish_on_edge(&mut self) -> Result<Vec<f32>, PipelineError> {
        let range = self.edge_layers..self.total_layers;
        let speed = self.speed;
        let merged = self
            .merged
            .as_ref()
            .and_then(|cache| cache.checkout(&self.package, &self.variant, range.clone()));
        let out = tokio::task::block_in_place(|| {
            let watch = speed.start();
            let out = match merged {
                Some(mut session) => session
                    .run(self.split_tensor.view())
                    .map_err(|e| PipelineError::Model(e.to_string())),
                None => self
                    .runner
                    .lock()?
                    .run_range(range.clone(), self.split_tensor.view())
                    .map_err(|e| PipelineError::Model(e.to_string())),
            };
            speed.finish_with_reference(watch, self.runner.reference(range));
            out
        })?;
        Ok(out.iter().copied().collect())
    }
}

/// The model input as `[C, H, W]`.
pub fn image_shape(package: &ModelPackage) -> Result<[usize; 3], PipelineError> {
    package.input_shape().try_into().map_err(|_| {
        PipelineError::Model(format!(
            "model input {:?} is not an image [C, H, W]",
            package.input_shape()
        ))
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Softmax of `scores` (all 0 when undefined: no finite score, or an empty slice).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![0.0; scores.len()];
    }
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        exps.into_iter().map(|e| e / sum).collect()
    } else {
        vec![0.0; scores.len()]
    }
}

/// Index and value of the largest score (first wins on ties; NaN never wins).
pub fn argmax(scores: &[f32]) -> (usize, f32) {
    scores
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 {
                (i, s)
            } else {
                best
            }
        })
}
