//! The tail of the model: checks requests against the packages, decodes their payloads and runs
//! the remaining layers, batched ([`crate::batch`]) and as merged ranges where they are ready.
//!
//! Each batch of one (model, variant, split) runs layers `split..L` as one merged session from
//! the [`MergedCache`] when that range is ready; otherwise (its first frames, while the range
//! builds, every `profile_every`-th batch, and always when the cache is off) as the chain of
//! per-layer sessions, whose per-layer times go back to the edge in `layer_us` for its profiler.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::codec::compact::TensorContext;
use jmdc_core::codec::{self, DecodeLimits};
use jmdc_core::jpeg;
use jmdc_core::package::{ModelPackage, Normalization};
use jmdc_core::preprocess;
use jmdc_core::protocol::{
    BindContext, ErrorKind, ErrorReply, InferRequest, InferResult, PayloadKind,
};
use jmdc_core::runner::{
    LayerRunner, MergedCache, MergedCacheConfig, MergedCacheStats, RangeCost, RunnerError,
    RunnerOptions, RunnerPool,
};
use jmdc_core::runtime::ExecutionDevice;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use tokio::sync::oneshot;
use tracing::info;

use crate::batch::policy::{useful_batch, BatchConfig};
use crate::batch::{BatchKey, BatchStats, Batcher, Executor, Job, Reply};

/// How the engine runs the tails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Execution threads, and sessions per (model, variant) and per merged range.
    pub workers: usize,
    /// Intra-op threads per session; `None` = ONNX Runtime's shared global pool.
    pub intra_op_threads: Option<usize>,
    /// Dynamic batching.
    pub batching: BatchConfig,
    /// Accounted bytes of merged-range sessions kept at once; 0 = always run chains.
    pub merged_cache_bytes: usize,
    /// Every this many batches of a key run as the chain (per-layer times for the edge's
    /// profiler); 0 = only while the merged range is not ready.
    pub profile_every: u64,
    /// Where the sessions run.
    pub device: ExecutionDevice,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            workers: 2,
            intra_op_threads: None,
            batching: BatchConfig::default(),
            merged_cache_bytes: 256 << 20,
            profile_every: 64,
            device: ExecutionDevice::Cpu,
        }
    }
}

/// One loaded package and a pool of chain sessions per variant.
#[derive(Debug)]
struct LoadedModel {
    package: Arc<ModelPackage>,
    chains: HashMap<String, RunnerPool<LayerRunner>>,
}

/// The packages and how their tails run (shared with the execution threads).
#[derive(Debug)]
struct Models {
    models: HashMap<String, LoadedModel>,
    merged: Option<MergedCache>,
    profile_every: u64,
}

/// All models this worker serves, and the threads that run them.
#[derive(Debug)]
pub struct TailEngine {
    models: Arc<Models>,
    batcher: Batcher,
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
    /// A thread could not be started.
    #[error("cannot start the worker's threads: {0}")]
    Threads(std::io::Error),
}

impl TailEngine {
    /// Loads every package under `models_dir` and starts the execution threads.
    pub fn load(models_dir: &Path, engine: &EngineOptions) -> Result<Self, EngineError> {
        let options = RunnerOptions {
            intra_op_threads: engine.intra_op_threads,
            device: engine.device,
            ..RunnerOptions::default()
        };
        let workers = engine.workers.max(1);
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
            let mut chains = HashMap::new();
            let layers = package.num_layers();
            for variant in package.variant_names() {
                let pool = RunnerPool::build(workers, || {
                    LayerRunner::new(&package, variant, 0..layers, &options)
                })
                .map_err(|e| EngineError::Package(e.to_string()))?;
                chains.insert(variant.to_owned(), pool);
            }
            info!(
                model = package.name(),
                variants = chains.len(),
                workers,
                "model loaded"
            );
            models.insert(package.name().to_owned(), LoadedModel { package, chains });
        }
        if models.is_empty() {
            return Err(EngineError::NoModels(models_dir.display().to_string()));
        }
        let merged = if engine.merged_cache_bytes > 0 {
            Some(
                MergedCache::new(MergedCacheConfig {
                    sessions: workers,
                    budget_bytes: engine.merged_cache_bytes,
                    options,
                })
                .map_err(EngineError::Threads)?,
            )
        } else {
            None
        };
        let models = Arc::new(Models {
            models,
            merged,
            profile_every: engine.profile_every,
        });
        let batcher = Batcher::start(engine.batching, workers, models.clone())
            .map_err(EngineError::Threads)?;
        Ok(Self { models, batcher })
    }

    /// Queues a frame for its batch; the receiver gets its answer. Requests for an unknown model
    /// or variant or a split that leaves nothing to run are answered at once (`Err`).
    pub fn submit(
        &self,
        request: InferRequest,
        arrived: Instant,
    ) -> Result<oneshot::Receiver<Reply>, ErrorReply> {
        if let Err((kind, message)) =
            self.models
                .tail(&request.model, &request.variant, request.split)
        {
            return Err(ErrorReply::new(Some(request.frame_id), kind, message));
        }
        let key = BatchKey {
            model: request.model.clone(),
            variant: request.variant.clone(),
            split: request.split,
        };
        let (reply, answer) = oneshot::channel();
        self.batcher.submit(
            key,
            Job {
                request,
                arrived,
                reply,
            },
        );
        Ok(answer)
    }

    /// [`submit`](Self::submit) and wait for the answer (blocking; tools and tests).
    pub fn infer_blocking(&self, request: InferRequest, arrived: Instant) -> Reply {
        let frame_id = request.frame_id;
        self.submit(request, arrived)?
            .blocking_recv()
            .map_err(|_| {
                ErrorReply::new(Some(frame_id), ErrorKind::Internal, "inference task failed")
            })?
    }

    /// The largest batch the engine forms for (model, variant, split) now: from the merged range's
    /// measured cost once it is ready (1 where batching does not pay), else `None` (the
    /// configured `max_batch` applies).
    pub fn batch_cap(&self, model: &str, variant: &str, split: u16) -> Option<usize> {
        self.models.batch_cap(&BatchKey {
            model: model.to_owned(),
            variant: variant.to_owned(),
            split,
        })
    }

    /// Batches and frames run so far.
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// The merged-range cache's counters (`None` when it is off).
    pub fn merged_stats(&self) -> Option<MergedCacheStats> {
        self.models.merged.as_ref().map(MergedCache::stats)
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
        let model = self
            .models
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
}

impl Models {
    /// The model for running layers `split..L` of `variant`, or why not (`UnknownModel`,
    /// `UnknownVariant`, `BadSplit` when nothing is left for the worker).
    fn tail(
        &self,
        model: &str,
        variant: &str,
        split: u16,
    ) -> Result<&LoadedModel, (ErrorKind, String)> {
        let loaded = self
            .models
            .get(model)
            .ok_or_else(|| (ErrorKind::UnknownModel, format!("unknown model `{model}`")))?;
        if !loaded.chains.contains_key(variant) {
            return Err((
                ErrorKind::UnknownVariant,
                format!("model `{model}` has no variant `{variant}`"),
            ));
        }
        let layers = loaded.package.num_layers();
        if usize::from(split) >= layers {
            return Err((
                ErrorKind::BadSplit,
                format!("split {split} leaves no layer for the cloud (model has {layers})"),
            ));
        }
        Ok(loaded)
    }

    /// Runs layers `split..L` on a stacked batch: merged when ready and not profiling, else the
    /// chain (with per-layer times).
    fn run_tail(
        &self,
        loaded: &LoadedModel,
        variant: &str,
        split: usize,
        input: ArrayViewD<'_, f32>,
        profile: bool,
    ) -> Result<(ArrayD<f32>, Vec<Duration>), RunnerError> {
        let layers = loaded.package.num_layers();
        if !profile {
            if let Some(cache) = &self.merged {
                if let Some(mut runner) = cache.checkout(&loaded.package, variant, split..layers) {
                    return runner.run(input).map(|out| (out, Vec::new()));
                }
            }
        }
        let no_session = || RunnerError::Inference {
            what: format!("{}/{variant}", loaded.package.name()),
            message: "no session for this variant".into(),
        };
        let pool = loaded.chains.get(variant).ok_or_else(no_session)?;
        let mut runner = pool.checkout().ok_or_else(no_session)?;
        runner.run_range_timed(split..layers, input)
    }
}

/// A frame whose payload decoded, waiting for its batch to run.
struct Decoded {
    job: Job,
    input: ArrayD<f32>,
    decode_us: u64,
}

impl Executor for Models {
    fn batch_cap(&self, key: &BatchKey) -> Option<usize> {
        let cache = self.merged.as_ref()?;
        let loaded = self.models.get(&key.model)?;
        let cost = cache.cost(
            &key.model,
            &key.variant,
            usize::from(key.split)..loaded.package.num_layers(),
        )?;
        Some(useful_batch(
            cost.single,
            cost.batched,
            RangeCost::PROBE_BATCH,
            usize::MAX,
        ))
    }

    fn execute(&self, key: &BatchKey, jobs: Vec<Job>, batch_index: u64) {
        let Ok(loaded) = self.tail(&key.model, &key.variant, key.split) else {
            // Checked when the frames were submitted; the packages do not change.
            for job in jobs {
                let frame_id = job.request.frame_id;
                job.answer(Err(ErrorReply::new(
                    Some(frame_id),
                    ErrorKind::Internal,
                    "model not loaded",
                )));
            }
            return;
        };
        let split = usize::from(key.split);
        let mut decoded = Vec::with_capacity(jobs.len());
        for job in jobs {
            let start = Instant::now();
            match decode_payload(&loaded.package, &key.variant, split, &job.request) {
                Ok(input) => decoded.push(Decoded {
                    job,
                    input,
                    decode_us: micros(start.elapsed()),
                }),
                Err(message) => {
                    let frame_id = job.request.frame_id;
                    job.answer(Err(ErrorReply::new(
                        Some(frame_id),
                        ErrorKind::BadPayload,
                        message,
                    )));
                }
            }
        }
        if decoded.is_empty() {
            return;
        }
        let profile = self.profile_every > 0 && batch_index.is_multiple_of(self.profile_every);
        let compute_start = Instant::now();
        let ran = stack(&decoded).and_then(|stacked| {
            let input = match &stacked {
                Some(batch) => batch.view(),
                None => decoded[0].input.view(),
            };
            self.run_tail(loaded, &key.variant, split, input, profile)
        });
        let cloud_compute_us = micros(compute_start.elapsed());
        let (output, layer_times) = match ran {
            Ok(ran) => ran,
            Err(e) => {
                let message = e.to_string();
                for frame in decoded {
                    let frame_id = frame.job.request.frame_id;
                    frame.job.answer(Err(ErrorReply::new(
                        Some(frame_id),
                        ErrorKind::Internal,
                        message.clone(),
                    )));
                }
                return;
            }
        };
        let layer_us: Vec<u32> = layer_times
            .iter()
            .map(|t| u32::try_from(t.as_micros()).unwrap_or(u32::MAX))
            .collect();
        for (frame, scores) in decoded.into_iter().zip(output.axis_iter(Axis(0))) {
            let frame_id = frame.job.request.frame_id;
            let waited = compute_start.saturating_duration_since(frame.job.arrived);
            let queue_us = micros(waited).saturating_sub(frame.decode_us);
            let non_finite = scores.iter().filter(|x| !x.is_finite()).count();
            let reply = if non_finite > 0 {
                // Finite but extreme inputs (a min and scale of 3e38) overflow inside the network.
                Err(ErrorReply::new(
                    Some(frame_id),
                    ErrorKind::BadPayload,
                    format!(
                        "the result is not finite ({non_finite} of {} scores NaN or infinite): \
                         the payload's values are out of the model's range",
                        scores.len()
                    ),
                ))
            } else {
                Ok(InferResult {
                    frame_id,
                    scores: scores.iter().copied().collect(),
                    cloud_compute_us,
                    decode_us: frame.decode_us,
                    queue_us,
                    layer_us: layer_us.clone(),
                })
            };
            frame.job.answer(reply);
        }
    }
}

/// The frames' inputs (`[1, …]` each) as one `[N, …]` tensor; `None` for a single frame, whose
/// input is run as it is (no copy).
fn stack(frames: &[Decoded]) -> Result<Option<ArrayD<f32>>, RunnerError> {
    if frames.len() == 1 {
        return Ok(None);
    }
    let views: Vec<_> = frames.iter().map(|f| f.input.view()).collect();
    ndarray::concatenate(Axis(0), &views)
        .map(Some)
        .map_err(|e| RunnerError::Inference {
            what: "batch".into(),
            message: format!("cannot stack the batch: {e}"),
        })
}

fn decode_payload(
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
