//! One frame through the edge: normalise, run the head, encode the split tensor, send it, await the
//! cloud's answer — or finish the frame on the edge when the cloud cannot.
//!
//! The plan is given per frame, so an adaptive loop can change it between frames; one ONNX Runtime
//! session chain per variant (all layers) serves every split point through `run_range`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::codec::Encoder;
use jmdc_core::package::ModelPackage;
use jmdc_core::preprocess;
use jmdc_core::protocol::{self, InferRequest, PayloadKind, Response};
use jmdc_core::runner::{LayerRunner, RunnerOptions};
use ndarray::ArrayD;
use tracing::warn;

use crate::client::CloudClient;
use crate::plan_spec::PlanSpec;
use crate::stats::FrameRecord;

/// Errors that stop the pipeline (not per-frame cloud failures, which fall back to the edge).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("plan: {0}")]
    Plan(String),
    #[error("model: {0}")]
    Model(String),
}

pub use crate::frame::Frame;

/// What the adaptive loop learns from one frame besides its record.
#[derive(Debug, Clone, Default)]
pub struct FrameObservation {
    /// Wall time of each head layer (index 0 = layer 0), without emulated slowdown.
    pub head_timings: Vec<Duration>,
    /// Round trip of the request, when the cloud answered.
    pub round_trip: Option<Duration>,
    /// Worker compute time for layers `split..L`, when the cloud answered.
    pub cloud_compute: Option<Duration>,
    /// Worker decode + queue + compute time, when the cloud answered.
    pub server_time: Option<Duration>,
    /// The worker's compute time of each layer `split..L`, µs (its per-layer cloud profile).
    pub cloud_layer_us: Vec<u32>,
}

/// The edge side: sessions per variant, an encoder, the request builder.
#[derive(Debug)]
pub struct EdgePipeline {
    package: Arc<ModelPackage>,
    options: RunnerOptions,
    runners: HashMap<String, LayerRunner>,
    device_id: String,
    timeout: Duration,
    encoder: Encoder,
    encode_buf: Vec<u8>,
    /// Emulates a slower edge device: head compute is stretched to this multiple of its real time.
    slowdown: f64,
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
            encode_buf: Vec::new(),
            slowdown: 1.0,
        }
    }

    /// Stretches edge compute to `factor` × its real time (≥ 1), to emulate a slower device on a
    /// fast machine. The extra time is really spent (slept), so every measurement sees it.
    pub fn with_slowdown(mut self, factor: f64) -> Self {
        self.slowdown = if factor.is_finite() {
            factor.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The emulated slowdown factor.
    pub fn slowdown(&self) -> f64 {
        self.slowdown
    }

    /// The package this pipeline runs.
    pub fn package(&self) -> &Arc<ModelPackage> {
        &self.package
    }

    /// Creates the sessions of `variant` now (start-up cost instead of first-frame cost).
    pub fn prepare(&mut self, variant: &str) -> Result<(), PipelineError> {
        self.runner(variant).map(|_| ())
    }

    fn runner(&mut self, variant: &str) -> Result<&mut LayerRunner, PipelineError> {
        if !self.runners.contains_key(variant) {
            let layers = self.package.num_layers();
            let runner = LayerRunner::new(&self.package, variant, 0..layers, &self.options)
                .map_err(|e| PipelineError::Model(e.to_string()))?;
            self.runners.insert(variant.to_owned(), runner);
        }
        self.runners
            .get_mut(variant)
            .ok_or_else(|| PipelineError::Model(format!("no runner for {variant}")))
    }

    /// Processes one frame with `plan`. Cloud problems never lose the frame: it is finished on
    /// the edge and marked `fallback`.
    pub async fn process(
        &mut self,
        frame: &Frame,
        plan: &PlanSpec,
        cloud: Option<&CloudClient>,
    ) -> Result<(FrameRecord, FrameObservation), PipelineError> {
        let start = Instant::now();
        let total_layers = self.package.num_layers();
        let edge_layers = plan
            .edge_layers(total_layers)
            .map_err(PipelineError::Plan)?;
        let mut record = FrameRecord {
            frame_id: frame.id,
            label: frame.label,
            plan: plan.to_string(),
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

        let edge_start = Instant::now();
        let split_tensor = if edge_layers > 0 {
            let slowdown = self.slowdown;
            let runner = self.runner(&plan.variant)?;
            let (out, timings) = tokio::task::block_in_place(|| {
                runner.run_range_timed(0..edge_layers, input.view())
            })
            .map_err(|e| PipelineError::Model(e.to_string()))?;
            stretch(edge_start.elapsed(), slowdown).await;
            observation.head_timings = timings;
            out
        } else {
            input
        };
        record.edge_us = micros(edge_start.elapsed());

        let scores = if edge_layers < total_layers {
            match self
                .ask_cloud(
                    frame,
                    plan,
                    edge_layers,
                    &split_tensor,
                    cloud,
                    &mut record,
                    &mut observation,
                )
                .await
            {
                Some(scores) => scores,
                None => {
                    record.fallback = true;
                    let finish = Instant::now();
                    let scores = self
                        .finish_on_edge(plan, edge_layers, &split_tensor)
                        .await?;
                    record.edge_us += micros(finish.elapsed());
                    scores
                }
            }
        } else {
            split_tensor.iter().copied().collect()
        };
        let (predicted, score) = argmax(&scores);
        record.predicted = predicted;
        record.score = score;
        record.total_us = micros(start.elapsed());
        Ok((record, observation))
    }

    /// Encodes and sends the split tensor; `None` when the cloud could not answer.
    #[allow(clippy::too_many_arguments)]
    async fn ask_cloud(
        &mut self,
        frame: &Frame,
        plan: &PlanSpec,
        edge_layers: usize,
        split_tensor: &ArrayD<f32>,
        cloud: Option<&CloudClient>,
        record: &mut FrameRecord,
        observation: &mut FrameObservation,
    ) -> Option<Vec<f32>> {
        let encode_start = Instant::now();
        let (payload_kind, payload) = if edge_layers == 0 {
            (PayloadKind::Image, frame.pixels.clone())
        } else {
            let shape = &split_tensor.shape()[1..];
            let data = split_tensor.as_slice()?;
            if let Err(e) =
                self.encoder
                    .encode_into(data, shape, &plan.codec_params(), &mut self.encode_buf)
            {
                warn!(frame = frame.id, error = %e, "cannot encode split tensor; finishing on edge");
                return None;
            }
            (PayloadKind::Feature, std::mem::take(&mut self.encode_buf))
        };
        record.encode_us = micros(encode_start.elapsed());
        let cloud = cloud?;
        let request = InferRequest {
            device_id: self.device_id.clone(),
            frame_id: frame.id,
            model: self.package.name().to_owned(),
            variant: plan.variant.clone(),
            split: u16::try_from(edge_layers).ok()?,
            payload_kind,
            payload,
        };
        record.bytes = protocol::request_encoded_len(&request);
        let sent = Instant::now();
        let response = cloud.infer(&request, self.timeout).await;
        let round_trip = sent.elapsed();
        if payload_kind == PayloadKind::Feature {
            // Give the buffer back so the next frame encodes without allocating.
            self.encode_buf = request.payload;
        }
        match response {
            Ok(Response::Result(result)) => {
                let server_us = result.cloud_compute_us + result.decode_us + result.queue_us;
                record.cloud_us = server_us;
                record.network_us = micros(round_trip).saturating_sub(server_us);
                observation.round_trip = Some(round_trip);
                observation.cloud_compute = Some(Duration::from_micros(result.cloud_compute_us));
                observation.server_time = Some(Duration::from_micros(server_us));
                observation.cloud_layer_us = result.layer_us;
                Some(result.scores)
            }
            Ok(Response::Error(reply)) => {
                warn!(frame = frame.id, kind = ?reply.kind, message = %reply.message, "cloud refused frame; finishing on edge");
                None
            }
            Err(e) => {
                warn!(frame = frame.id, error = %e, "cloud unavailable; finishing on edge");
                None
            }
        }
    }

    async fn finish_on_edge(
        &mut self,
        plan: &PlanSpec,
        edge_layers: usize,
        split_tensor: &ArrayD<f32>,
    ) -> Result<Vec<f32>, PipelineError> {
        let total_layers = self.package.num_layers();
        let slowdown = self.slowdown;
        let runner = self.runner(&plan.variant)?;
        let started = Instant::now();
        let out = tokio::task::block_in_place(|| {
            runner.run_range(edge_layers..total_layers, split_tensor.view())
        })
        .map_err(|e| PipelineError::Model(e.to_string()))?;
        stretch(started.elapsed(), slowdown).await;
        Ok(out.iter().copied().collect())
    }
}

/// Sleeps so that work that took `spent` appears to take `spent × factor`.
async fn stretch(spent: Duration, factor: f64) {
    if factor > 1.0 {
        tokio::time::sleep(spent.mul_f64(factor - 1.0)).await;
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
