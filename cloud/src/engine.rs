//! The tail of the model: decodes a request's payload and runs the remaining layers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use jmdc_core::codec::compact::TensorContext;
use jmdc_core::codec::{self, DecodeLimits};
use jmdc_core::jpeg;
use jmdc_core::package::{ModelPackage, Normalization};
use jmdc_core::preprocess;
use jmdc_core::protocol::{
    BindContext, ErrorKind, ErrorReply, InferRequest, InferResult, PayloadKind,
};
use jmdc_core::runner::{LayerRunner, RunnerOptions, RunnerPool};
use ndarray::{ArrayD, IxDyn};
use tracing::info;

/// One loaded package and a pool of sessions per variant.
#[derive(Debug)]
struct LoadedModel {
    package: Arc<ModelPackage>,
    pools: HashMap<String, RunnerPool<LayerRunner>>,
}

/// All models this worker serves.
#[derive(Debug)]
pub struct TailEngine {
    models: HashMap<String, LoadedModel>,
}

/// Failures while loading models.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The models folder cannot be listed.
    #[error("cannot list model packages in {path}: {source}")]
    ListDir {
        /// The models folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The models folder holds no package (the folder is named).
    #[error("no model package (folder with manifest.json) in {0}")]
    NoModels(String),
    /// A package failed to load (the message names it and why).
    #[error("{0}")]
    Package(String),
}

impl TailEngine {
    /// Loads every package under `models_dir` with `workers` sessions per variant.
    pub fn load(
        models_dir: &Path,
        workers: usize,
        threads: Option<usize>,
    ) -> Result<Self, EngineError> {
        let options = RunnerOptions {
            intra_op_threads: threads,
            ..RunnerOptions::default()
        };
        let entries = std::fs::read_dir(models_dir).map_err(|source| EngineError::ListDir {
            path: models_dir.display().to_string(),
            source,
        })?;
        let mut dirs: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("manifest.json").is_file())
            .collect();
        dirs.sort();
        let mut models = HashMap::new();
        for dir in dirs {
            let package = Arc::new(
                ModelPackage::load(&dir).map_err(|e| EngineError::Package(e.to_string()))?,
            );
            let mut pools = HashMap::new();
            let layers = package.num_layers();
            for variant in package.variant_names() {
                let pool = RunnerPool::build(workers, || {
                    LayerRunner::new(&package, variant, 0..layers, &options)
                })
                .map_err(|e| EngineError::Package(e.to_string()))?;
                pools.insert(variant.to_owned(), pool);
            }
            info!(
                model = package.name(),
                variants = pools.len(),
                workers,
                "model loaded"
            );
            models.insert(package.name().to_owned(), LoadedModel { package, pools });
        }
        if models.is_empty() {
            return Err(EngineError::NoModels(models_dir.display().to_string()));
        }
        Ok(Self { models })
    }

    /// The model and the variant's session pool for running layers `split..L`, or why not
    /// (`UnknownModel`, `UnknownVariant`, `BadSplit` when nothing is left for the worker).
    fn tail(
        &self,
        model: &str,
        variant: &str,
        split: u16,
    ) -> Result<(&LoadedModel, &RunnerPool<LayerRunner>), (ErrorKind, String)> {
        let loaded = self
            .models
            .get(model)
            .ok_or_else(|| (ErrorKind::UnknownModel, format!("unknown model `{model}`")))?;
        let pool = loaded.pools.get(variant).ok_or_else(|| {
            (
                ErrorKind::UnknownVariant,
                format!("model `{model}` has no variant `{variant}`"),
            )
        })?;
        let layers = loaded.package.num_layers();
        if usize::from(split) >= layers {
            return Err((
                ErrorKind::BadSplit,
                format!("split {split} leaves no layer for the cloud (model has {layers})"),
            ));
        }
        Ok((loaded, pool))
    }

    /// Checks a context binding against the packages and returns the shape every frame on it must
    /// carry: the split tensor's (feature contexts) or the model input's (image and JPEG
    /// contexts, split 0 only), and for feature contexts the tensor context the frames' bodies
    /// expand with. Errors are the replies the binding gets.
    pub fn bind(
        &self,
        bind: &BindContext,
    ) -> Result<(Vec<usize>, Option<TensorContext>), ErrorReply> {
        let fail = |kind: ErrorKind, message: String| ErrorReply::new(None, kind, message);
        let (model, _) = self
            .tail(&bind.model, &bind.variant, bind.split)
            .map_err(|(kind, message)| fail(kind, message))?;
        let split = usize::from(bind.split);
        match (bind.payload_kind, bind.coding) {
            (PayloadKind::Feature, Some(coding)) => {
                if split == 0 {
                    return Err(fail(
                        ErrorKind::BadSplit,
                        "a feature tensor needs split ≥ 1 (split 0 sends the image)".into(),
                    ));
                }
                let shape = model
                    .package
                    .split_tensor_shape(&bind.variant, split)
                    .map_err(|e| fail(ErrorKind::BadSplit, e.to_string()))?
                    .to_vec();
                let tensor = TensorContext {
                    shape: shape.clone(),
                    keep_ratio: coding.keep_ratio,
                    mode: coding.mode,
                };
                tensor
                    .validate()
                    .map_err(|e| fail(ErrorKind::BadPayload, e.to_string()))?;
                Ok((shape, Some(tensor)))
            }
            (PayloadKind::Image | PayloadKind::Jpeg, None) if split == 0 => {
                Ok((model.package.input_shape().to_vec(), None))
            }
            (kind @ (PayloadKind::Image | PayloadKind::Jpeg), None) => {
                // The same reply a self-contained request gets (`payload_input`).
                let what = if kind == PayloadKind::Jpeg {
                    "a JPEG"
                } else {
                    "an image"
                };
                Err(fail(
                    ErrorKind::BadPayload,
                    format!("{what} payload needs split 0, not {split}"),
                ))
            }
            // The decoder refuses a coding on a non-feature payload and a feature one without.
            _ => Err(fail(
                ErrorKind::Malformed,
                "coding present exactly for feature payloads".into(),
            )),
        }
    }

    /// Runs the tail for one request (blocking: call from a blocking thread).
    pub fn infer(&self, req: &InferRequest, arrived: Instant) -> Result<InferResult, ErrorReply> {
        let fail = |kind: ErrorKind, message: String| ErrorReply {
            frame_id: Some(req.frame_id),
            kind,
            message,
        };
        let (model, pool) = self
            .tail(&req.model, &req.variant, req.split)
            .map_err(|(kind, message)| fail(kind, message))?;
        let layers = model.package.num_layers();
        let split = usize::from(req.split);

        let decode_start = Instant::now();
        let input = self
            .decode_payload(&model.package, &req.variant, split, req)
            .map_err(|m| fail(ErrorKind::BadPayload, m))?;
        let decode_us = micros(decode_start.elapsed());

        let queue_start = Instant::now();
        let mut runner = pool
            .checkout()
            .ok_or_else(|| fail(ErrorKind::Internal, "no session for this variant".into()))?;
        let compute_start = Instant::now();
        let queue_us = micros(compute_start.duration_since(queue_start))
            + micros(decode_start.duration_since(arrived));
        let (output, layer_times) = runner
            .run_range_timed(split..layers, input.view())
            .map_err(|e| fail(ErrorKind::Internal, e.to_string()))?;
        drop(runner);
        let cloud_compute_us = micros(compute_start.elapsed());
        let non_finite = output.iter().filter(|x| !x.is_finite()).count();
        if non_finite > 0 {
            // Finite but extreme inputs (a min and scale of 3e38) overflow inside the network.
            return Err(fail(
                ErrorKind::BadPayload,
                format!(
                    "the result is not finite ({non_finite} of {} scores NaN or infinite): the \
                     payload's values are out of the model's range",
                    output.len()
                ),
            ));
        }
        Ok(InferResult {
            frame_id: req.frame_id,
            scores: output.iter().copied().collect(),
            cloud_compute_us,
            decode_us,
            queue_us,
            layer_us: layer_times
                .iter()
                .map(|t| u32::try_from(t.as_micros()).unwrap_or(u32::MAX))
                .collect(),
        })
    }

    fn decode_payload(
        &self,
        package: &ModelPackage,
        variant: &str,
        split: usize,
        req: &InferRequest,
    ) -> Result<ArrayD<f32>, String> {
        let expected = package
            .split_tensor_shape(variant, split)
            .map_err(|e| e.to_string())?;
        let tail = TailInput {
            variant,
            split,
            input_shape: package.input_shape(),
            split_shape: expected,
            normalization: package.normalization(),
        };
        payload_input(&tail, req.payload_kind, &req.payload)
    }
}

/// What a request's payload must become: the model's input and the tensor at the split.
#[derive(Debug, Clone, Copy)]
pub struct TailInput<'a> {
    /// The variant (named in errors).
    pub variant: &'a str,
    /// The first layer the worker runs.
    pub split: usize,
    /// The model's input `[C, H, W]` (image payloads).
    pub input_shape: &'a [usize],
    /// The tensor at `split` without the batch axis (feature payloads).
    pub split_shape: &'a [usize],
    /// How image pixels are normalised.
    pub normalization: &'a Normalization,
}

/// Decodes a request's payload (peer-controlled bytes) into the tail's input tensor `[1, …]`, as
/// the worker does before inference: a raw or JPEG image (split 0 only; the JPEG's header must
/// give exactly H×W) normalised, or a feature tensor (`jmdc_core::codec`, at most the split
/// tensor's elements) of exactly the split's shape. Errors are messages for a `BadPayload`
/// reply. Pure; public for the fuzz target `cloud/fuzz` `request_payload`.
pub fn payload_input(
    tail: &TailInput<'_>,
    kind: PayloadKind,
    payload: &[u8],
) -> Result<ArrayD<f32>, String> {
    let split = tail.split;
    match kind {
        PayloadKind::Image | PayloadKind::Jpeg => {
            let is_jpeg = matches!(kind, PayloadKind::Jpeg);
            if split != 0 {
                let what = if is_jpeg { "a JPEG" } else { "an image" };
                return Err(format!("{what} payload needs split 0, not {split}"));
            }
            let shape: [usize; 3] = tail
                .input_shape
                .try_into()
                .map_err(|_| "model input is not an image [C, H, W]".to_string())?;
            let decoded;
            let pixels: &[u8] = if is_jpeg {
                // Refuses a JPEG whose header is not exactly H×W before decoding any pixel.
                decoded = jpeg::decode_chw(payload, shape).map_err(|e| e.to_string())?;
                &decoded
            } else {
                payload
            };
            preprocess::normalize_chw_u8(pixels, shape, tail.normalization)
                .map(|a| a.into_dyn())
                .map_err(|e| e.to_string())
        }
        PayloadKind::Feature => {
            let expected = tail.split_shape;
            let limits = DecodeLimits {
                max_elements: expected.iter().product::<usize>().max(1),
                ..DecodeLimits::default()
            };
            let decoded = codec::decode(payload, &limits).map_err(|e| e.to_string())?;
            if decoded.shape != expected {
                return Err(format!(
                    "tensor shape {:?} does not match split {split} of `{}` (expects {:?})",
                    decoded.shape, tail.variant, expected
                ));
            }
            let mut shape = vec![1];
            shape.extend_from_slice(&decoded.shape);
            ArrayD::from_shape_vec(IxDyn(&shape), decoded.data).map_err(|e| e.to_string())
        }
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
