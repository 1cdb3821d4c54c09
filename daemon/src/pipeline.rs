//! One frame through the edge: normalise, run the head, encode the split tensor, send it, await the
//! cloud's answer — or finish the frame on the edge when the cloud cannot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::codec;
use jmdc_core::package::ModelPackage;
use jmdc_core::preprocess;
use jmdc_core::protocol::{self, InferRequest, PayloadKind, Response};
use jmdc_core::runner::{LayerRunner, RunnerOptions};
use ndarray::{ArrayD, IxDyn};
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
    #[error("codec: {0}")]
    Codec(#[from] codec::CodecError),
}

/// A frame as read from a source: 8-bit CHW pixels at the model's input size.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u64,
    pub label: Option<u8>,
    pub pixels: Vec<u8>,
}

/// The edge side of one plan.
#[derive(Debug)]
pub struct EdgePipeline {
    package: Arc<ModelPackage>,
    plan: PlanSpec,
    edge_layers: usize,
    total_layers: usize,
    /// Layers `0..edge_layers`; absent for cloud-only.
    head: Option<LayerRunner>,
    /// Layers `edge_layers..L`, used only when the cloud fails; absent for edge-only.
    tail: Option<LayerRunner>,
    device_id: String,
    timeout: Duration,
    encode_buf: Vec<u8>,
}

impl EdgePipeline {
    /// Builds the runners for `plan` on `package`.
    pub fn new(
        package: Arc<ModelPackage>,
        plan: PlanSpec,
        device_id: String,
        timeout: Duration,
        threads: Option<usize>,
    ) -> Result<Self, PipelineError> {
        let total_layers = package.num_layers();
        let edge_layers = plan
            .edge_layers(total_layers)
            .map_err(PipelineError::Plan)?;
        package
            .variant(&plan.variant)
            .map_err(|e| PipelineError::Plan(e.to_string()))?;
        let options = RunnerOptions {
            intra_op_threads: threads,
            ..RunnerOptions::default()
        };
        let runner = |range: std::ops::Range<usize>| {
            LayerRunner::new(&package, &plan.variant, range, &options)
                .map_err(|e| PipelineError::Model(e.to_string()))
        };
        let head = (edge_layers > 0)
            .then(|| runner(0..edge_layers))
            .transpose()?;
        let tail = (edge_layers < total_layers)
            .then(|| runner(edge_layers..total_layers))
            .transpose()?;
        Ok(Self {
            package,
            plan,
            edge_layers,
            total_layers,
            head,
            tail,
            device_id,
            timeout,
            encode_buf: Vec::new(),
        })
    }

    /// The plan this pipeline runs.
    pub fn plan(&self) -> &PlanSpec {
        &self.plan
    }

    /// True when frames need the cloud.
    pub fn needs_cloud(&self) -> bool {
        self.edge_layers < self.total_layers
    }

    /// Processes one frame. Cloud problems never lose the frame: it is finished on the edge.
    pub async fn process(
        &mut self,
        frame: &Frame,
        cloud: Option<&CloudClient>,
    ) -> Result<FrameRecord, PipelineError> {
        let start = Instant::now();
        let mut record = FrameRecord {
            frame_id: frame.id,
            label: frame.label,
            ..Default::default()
        };
        let input = preprocess::normalize_chw_u8(
            &frame.pixels,
            image_shape(&self.package)?,
            self.package.normalization(),
        )
        .map_err(|e| PipelineError::Model(e.to_string()))?
        .into_dyn();

        let edge_start = Instant::now();
        let split_tensor = match self.head.as_mut() {
            Some(head) => tokio::task::block_in_place(|| head.run(input.view()))
                .map_err(|e| PipelineError::Model(e.to_string()))?,
            None => input,
        };
        record.edge_us = micros(edge_start.elapsed());

        let scores = if self.needs_cloud() {
            match self
                .ask_cloud(frame, &split_tensor, cloud, &mut record)
                .await
            {
                Some(scores) => scores,
                None => {
                    record.fallback = true;
                    let finish = Instant::now();
                    let scores = self.finish_on_edge(&split_tensor)?;
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
        Ok(record)
    }

    /// Encodes and sends the split tensor; `None` when the cloud could not answer.
    async fn ask_cloud(
        &mut self,
        frame: &Frame,
        split_tensor: &ArrayD<f32>,
        cloud: Option<&CloudClient>,
        record: &mut FrameRecord,
    ) -> Option<Vec<f32>> {
        let encode_start = Instant::now();
        let (payload_kind, payload) = if self.edge_layers == 0 {
            (PayloadKind::Image, frame.pixels.clone())
        } else {
            let shape = &split_tensor.shape()[1..];
            let data = split_tensor.as_slice()?;
            if let Err(e) =
                codec::encode_into(data, shape, &self.plan.codec_params(), &mut self.encode_buf)
            {
                warn!(frame = frame.id, error = %e, "cannot encode split tensor; finishing on edge");
                return None;
            }
            (PayloadKind::Feature, self.encode_buf.clone())
        };
        record.encode_us = micros(encode_start.elapsed());
        let cloud = cloud?;
        let request = InferRequest {
            device_id: self.device_id.clone(),
            frame_id: frame.id,
            model: self.package.name().to_owned(),
            variant: self.plan.variant.clone(),
            split: u16::try_from(self.edge_layers).ok()?,
            payload_kind,
            payload,
        };
        record.bytes = protocol::request_encoded_len(&request);
        let sent = Instant::now();
        let response = cloud.infer(&request, self.timeout).await;
        let round_trip = micros(sent.elapsed());
        match response {
            Ok(Response::Result(result)) => {
                let cloud_us = result.cloud_compute_us + result.decode_us + result.queue_us;
                record.cloud_us = cloud_us;
                record.network_us = round_trip.saturating_sub(cloud_us);
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

    fn finish_on_edge(&mut self, split_tensor: &ArrayD<f32>) -> Result<Vec<f32>, PipelineError> {
        let tail = self
            .tail
            .as_mut()
            .ok_or_else(|| PipelineError::Model("no tail runner".into()))?;
        let out = tokio::task::block_in_place(|| tail.run(split_tensor.view()))
            .map_err(|e| PipelineError::Model(e.to_string()))?;
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

/// Shapes a flat tensor with a batch dimension of one.
pub fn batch_of_one(shape: &[usize], data: Vec<f32>) -> Option<ArrayD<f32>> {
    let mut full = Vec::with_capacity(shape.len() + 1);
    full.push(1);
    full.extend_from_slice(shape);
    ArrayD::from_shape_vec(IxDyn(&full), data).ok()
}
