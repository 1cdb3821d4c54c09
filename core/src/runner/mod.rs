//! Running layer ranges of a model package with ONNX Runtime.
//!
//! * [`LayerRunner`] runs layers `[a, b)` of one variant as a chain of per-layer sessions
//!   (one ONNX Runtime session per layer file). Intermediate tensors stay inside ONNX Runtime
//!   between hops (no copy to ndarray until the end).
//! * [`MergedRunner`] runs layers `[a, b)` as one session built from the per-layer files
//!   ([`jmdc_proto::onnx::compose_chain`]): the same outputs as the chain, at the speed of one
//!   session.
//! * [`FullModelRunner`] runs a variant's fused `full.onnx` (the reference).
//! * [`RunnerPool`] is a bounded set of runners for concurrent callers.
//! * [`MergedCache`] builds merged ranges in the background as plans change and keeps them
//!   within a memory budget.
//!
//! ## Concurrency
//! In `ort` 2.0.0-rc.15, `Session::run` takes `&mut self`, so a runner serves one request at a
//! time. Callers that serve concurrent requests keep several runners in a [`RunnerPool`] and check
//! one out per request ([`RunnerPool::checkout`] blocks, [`RunnerPool::try_checkout`] returns
//! `None` when all are busy, which callers can treat as overload). All runners share the
//! process-wide thread pool set up by [`crate::runtime`].
//!
//! [`crate::runtime::init_onnxruntime`] must have succeeded before a runner is built.

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ndarray::{ArrayD, ArrayViewD};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorRef};

use crate::package::{ModelPackage, PackageError, Variant};
use crate::runtime::{self, RuntimeError};

mod cache;
mod merged;
pub use cache::{MergedCache, MergedCacheConfig, MergedCacheStats, RangeCost};
pub use merged::MergedRunner;

/// Errors from building or running a runner.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Package lookup or file verification failed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// ONNX Runtime is not initialised or session options failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The requested layer range is empty or outside the model.
    #[error("invalid layer range {start}..{end} for a model with {layers} layers (need start < end <= layers)")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Number of layers L.
        layers: usize,
    },
    /// The input tensor's shape does not match the manifest.
    #[error("input shape {got:?} does not match expected [N, {}] (N >= 1) for {what}", join(.expected))]
    InputShape {
        /// Shape given (with batch).
        got: Vec<usize>,
        /// Expected shape without batch.
        expected: Vec<usize>,
        /// What was being run, e.g. "alexnet-cifar10/keep100 layers 3..13".
        what: String,
    },
    /// Building a session from a file failed.
    #[error("cannot load ONNX model {file}: {message}")]
    SessionLoad {
        /// The model file.
        file: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// A session's inputs/outputs do not match the manifest's names.
    #[error("ONNX model {file} does not match the manifest: {message}")]
    ModelMismatch {
        /// The model file.
        file: String,
        /// What differs.
        message: String,
    },
    /// Inference failed inside ONNX Runtime.
    #[error("inference failed in {what}: {message}")]
    Inference {
        /// Which layer/model.
        what: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The per-layer files of a range could not be composed into one model.
    #[error("cannot merge {what} into one model: {source}")]
    Compose {
        /// The range, e.g. "alexnet-cifar10/keep100 layers 0..6".
        what: String,
        /// Why.
        #[source]
        source: jmdc_proto::onnx::OnnxError,
    },
    /// A layer produced an output of an unexpected shape.
    #[error("{what} produced shape {got:?}, manifest says [N, {}]", join(.expected))]
    OutputShape {
        /// Which layer/model.
        what: String,
        /// Shape produced.
        got: Vec<usize>,
        /// Expected shape without batch.
        expected: Vec<usize>,
    },
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Options for building runners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerOptions {
    /// `None` (default): use the runtime's thread setup (the shared global pool).
    /// `Some(n)`: give every session of this runner its own intra-op pool of `n` threads.
    pub intra_op_threads: Option<usize>,
    /// Build sessions from the files on disk instead of from hash-verified bytes in memory
    /// (skips verification; only for tools that verified the package themselves).
    pub load_from_file: bool,
    /// Where the sessions run (CPU unless told otherwise).
    pub device: runtime::ExecutionDevice,
}

struct LayerSession {
    session: Session,
    /// "package/variant layer i (file)"
    what: String,
    output_shape: Vec<usize>,
}

impl std::fmt::Debug for LayerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSession")
            .field("what", &self.what)
            .field("output_shape", &self.output_shape)
            .finish_non_exhaustive()
    }
}

fn build_session(
    pkg: &ModelPackage,
    bytes_or_path: Result<Vec<u8>, std::path::PathBuf>,
    file: &str,
    shapes: (&[usize], &[usize]),
    options: &RunnerOptions,
) -> Result<Session, RunnerError> {
    let load_err = |message: String| RunnerError::SessionLoad {
        file: file.to_string(),
        message,
    };
    let mut builder = runtime::session_builder(options.intra_op_threads, options.device)?;
    let session = match bytes_or_path {
        Ok(bytes) => builder.commit_from_memory(&bytes),
        Err(path) => builder.commit_from_file(path),
    }
    .map_err(|e| load_err(e.to_string()))?;
    // Check the I/O names against the manifest so a mismatch fails at load, not per request.
    let mismatch = |message: String| RunnerError::ModelMismatch {
        file: file.to_string(),
        message,
    };
    let ins: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let outs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    if ins != [pkg.input_name()] {
        return Err(mismatch(format!(
            "inputs {ins:?}, expected [{:?}]",
            pkg.input_name()
        )));
    }
    if !outs.contains(&pkg.output_name()) {
        return Err(mismatch(format!(
            "outputs {outs:?} lack {:?}",
            pkg.output_name()
        )));
    }
    // Declared shapes must agree with the manifest (dynamic dimensions, -1, match anything).
    let (want_in, want_out) = shapes;
    let input = session.inputs().first();
    let output = session
        .outputs()
        .iter()
        .find(|o| o.name() == pkg.output_name());
    for (what, outlet, want) in [("input", input, want_in), ("output", output, want_out)] {
        let Some(outlet) = outlet else { continue };
        let dtype = outlet.dtype();
        if dtype.tensor_type() != Some(ort::value::TensorElementType::Float32) {
            return Err(mismatch(format!(
                "{what} is {dtype:?}, expected a float32 tensor"
            )));
        }
        if let Some(declared) = dtype.tensor_shape() {
            let fits = declared.len() == want.len() + 1
                && declared[1..]
                    .iter()
                    .zip(want)
                    .all(|(&d, &w)| d < 0 || d as usize == w);
            if !fits {
                return Err(mismatch(format!(
                    "{what} is declared {:?}, manifest says [N, {}]",
                    &declared[..],
                    join(want)
                )));
            }
        }
    }
    Ok(session)
}

/// `range` must be non-empty and within the variant's layers.
fn check_range(v: &Variant, range: &Range<usize>) -> Result<(), RunnerError> {
    let layers = v.num_layers();
    if range.start >= range.end || range.end > layers {
        return Err(RunnerError::BadRange {
            start: range.start,
            end: range.end,
            layers,
        });
    }
    Ok(())
}

fn check_input(
    input: &ArrayViewD<'_, f32>,
    expected: &[usize],
    what: impl FnOnce() -> String,
) -> Result<(), RunnerError> {
    let s = input.shape();
    if s.len() != expected.len() + 1 || s[0] == 0 || &s[1..] != expected {
        return Err(RunnerError::InputShape {
            got: s.to_vec(),
            expected: expected.to_vec(),
            what: what(),
        });
    }
    Ok(())
}

/// Runs one session on `input`, returning its output value (kept inside ONNX Runtime).
fn run_session(
    session: &mut Session,
    input: SessionInputValue<'_>,
    input_name: &str,
    output_name: &str,
    what: &str,
) -> Result<DynValue, RunnerError> {
    let inf = |message: String| RunnerError::Inference {
        what: what.to_string(),
        message,
    };
    let mut outputs = session
        .run(ort::inputs![input_name => input])
        .map_err(|e| inf(e.to_string()))?;
    outputs
        .remove(output_name)
        .ok_or_else(|| inf(format!("no output named {output_name:?}")))
}

fn check_output(
    value: &DynValue,
    batch: usize,
    expected: &[usize],
    what: &str,
) -> Result<(), RunnerError> {
    let shape: Vec<usize> = match value.try_extract_tensor::<f32>() {
        Ok((shape, _)) => shape.iter().map(|&d| d.max(0) as usize).collect(),
        Err(e) => {
            return Err(RunnerError::Inference {
                what: what.to_string(),
                message: format!("output is not a float32 tensor: {e}"),
            })
        }
    };
    if shape.len() != expected.len() + 1 || shape[0] != batch || &shape[1..] != expected {
        return Err(RunnerError::OutputShape {
            what: what.to_string(),
            got: shape,
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

/// Runs a model that is one session (`full.onnx`, a merged range) on `input`, with the shape
/// checks of both ends.
fn run_single(
    session: &mut LayerSession,
    input: ArrayViewD<'_, f32>,
    input_shape: &[usize],
    (input_name, output_name): (&str, &str),
) -> Result<ArrayD<f32>, RunnerError> {
    let what = session.what.clone();
    check_input(&input, input_shape, || what.clone())?;
    let batch = input.shape()[0];
    let contiguous = input.as_standard_layout();
    let t = TensorRef::from_array_view(&contiguous).map_err(|e| RunnerError::Inference {
        what: what.clone(),
        message: e.to_string(),
    })?;
    let out = run_session(
        &mut session.session,
        t.into(),
        input_name,
        output_name,
        &what,
    )?;
    check_output(&out, batch, &session.output_shape, &what)?;
    to_array(&out, &what)
}

fn to_array(value: &DynValue, what: &str) -> Result<ArrayD<f32>, RunnerError> {
    value
        .try_extract_array::<f32>()
        .map(|a| a.to_owned())
        .map_err(|e| RunnerError::Inference {
            what: what.to_string(),
            message: format!("cannot read output: {e}"),
        })
}

/// Runs layers `[start, end)` of one variant as a chain of per-layer sessions.
#[derive(Debug)]
pub struct LayerRunner {
    package: String,
    variant: String,
    range: Range<usize>,
    input_name: String,
    output_name: String,
    input_shape: Vec<usize>,
    sessions: Vec<LayerSession>,
    last_timings: Vec<Duration>,
}

impl LayerRunner {
    /// Builds sessions for layers `range` (`start < end <= L`) of `variant`.
    ///
    /// Each layer's bytes are read and SHA-256-verified, then handed to ONNX Runtime from memory
    /// (unless `options.load_from_file`).
    pub fn new(
        pkg: &ModelPackage,
        variant: &str,
        range: Range<usize>,
        options: &RunnerOptions,
    ) -> Result<LayerRunner, RunnerError> {
        let v = pkg.variant(variant)?;
        check_range(v, &range)?;
        let mut sessions = Vec::with_capacity(range.len());
        for i in range.clone() {
            let l = &v.layers[i];
            let path = pkg.layer_path(variant, i)?;
            let src = if options.load_from_file {
                Err(path.clone())
            } else {
                Ok(pkg.read_layer(variant, i)?)
            };
            let session = build_session(
                pkg,
                src,
                &path.display().to_string(),
                (&l.input_shape, &l.output_shape),
                options,
            )?;
            sessions.push(LayerSession {
                session,
                what: format!("{}/{} layer {i} ({})", pkg.name(), variant, l.file),
                output_shape: l.output_shape.clone(),
            });
        }
        Ok(LayerRunner {
            package: pkg.name().to_string(),
            variant: variant.to_string(),
            input_shape: pkg.split_tensor_shape(variant, range.start)?.to_vec(),
            range,
            input_name: pkg.input_name().to_string(),
            output_name: pkg.output_name().to_string(),
            sessions,
            last_timings: Vec::new(),
        })
    }

    /// Runs the chain on `input` (`[N, *input_shape]`, N ≥ 1); returns `[N, *output_shape]`.
    pub fn run(&mut self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, RunnerError> {
        self.run_timed(input).map(|(out, _)| out)
    }

    /// Like [`run`](Self::run), also returning the wall time of each layer (index 0 = layer
    /// `start`). The timings are also kept in [`last_timings`](Self::last_timings).
    pub fn run_timed(
        &mut self,
        input: ArrayViewD<'_, f32>,
    ) -> Result<(ArrayD<f32>, Vec<Duration>), RunnerError> {
        let range = self.range.clone();
        self.run_range_timed(range, input)
    }

    /// Runs only layers `sub` (a sub-range of [`range`](Self::range)) on `input`, which must have
    /// the shape crossing split `sub.start`. Lets one set of sessions serve every split point.
    pub fn run_range(
        &mut self,
        sub: Range<usize>,
        input: ArrayViewD<'_, f32>,
    ) -> Result<ArrayD<f32>, RunnerError> {
        self.run_range_timed(sub, input).map(|(out, _)| out)
    }

    /// [`run_range`](Self::run_range) with per-layer wall times (index 0 = layer `sub.start`).
    pub fn run_range_timed(
        &mut self,
        sub: Range<usize>,
        input: ArrayViewD<'_, f32>,
    ) -> Result<(ArrayD<f32>, Vec<Duration>), RunnerError> {
        if sub.start >= sub.end || sub.start < self.range.start || sub.end > self.range.end {
            return Err(RunnerError::BadRange {
                start: sub.start,
                end: sub.end,
                layers: self.range.end,
            });
        }
        let first_session = sub.start - self.range.start;
        let sessions_end = sub.end - self.range.start;
        let expected_input = if first_session == 0 {
            self.input_shape.as_slice()
        } else {
            self.sessions[first_session - 1].output_shape.as_slice()
        };
        check_input(&input, expected_input, || self.describe())?;
        let batch = input.shape()[0];
        let contiguous = input.as_standard_layout();
        let first =
            TensorRef::from_array_view(&contiguous).map_err(|e| RunnerError::Inference {
                what: self.describe(),
                message: e.to_string(),
            })?;
        let mut timings = Vec::with_capacity(sessions_end - first_session);
        let mut current: Option<DynValue> = None;
        // Moved into the first hop. Never `clone()` a tensor here: in ort rc.15 that is a deep
        // copy through an identity session, and it can deadlock on ort's internal session map.
        let mut first = Some(first);
        for ls in &mut self.sessions[first_session..sessions_end] {
            let input_value: SessionInputValue<'_> = match (first.take(), &current) {
                (Some(t), _) => t.into(),
                (None, Some(v)) => v.into(),
                (None, None) => unreachable!("the first hop consumes the input tensor"),
            };
            let t0 = Instant::now();
            let out = run_session(
                &mut ls.session,
                input_value,
                &self.input_name,
                &self.output_name,
                &ls.what,
            )?;
            timings.push(t0.elapsed());
            check_output(&out, batch, &ls.output_shape, &ls.what)?;
            current = Some(out);
        }
        let last = current.ok_or(RunnerError::BadRange {
            start: sub.start,
            end: sub.end,
            layers: self.range.end,
        })?;
        let out = to_array(&last, &self.describe())?;
        self.last_timings.clone_from(&timings);
        Ok((out, timings))
    }

    /// Per-layer timings of the last successful run.
    pub fn last_timings(&self) -> &[Duration] {
        &self.last_timings
    }

    /// Layer range `[start, end)`.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Variant name.
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Package name.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// Expected input shape without batch dimension (split `start`).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Output shape without batch dimension (split `end`).
    pub fn output_shape(&self) -> &[usize] {
        self.sessions
            .last()
            .map(|s| s.output_shape.as_slice())
            .unwrap_or(&self.input_shape)
    }

    fn describe(&self) -> String {
        format!(
            "{}/{} layers {}..{}",
            self.package, self.variant, self.range.start, self.range.end
        )
    }
}

/// Runs a variant's fused `full.onnx`.
#[derive(Debug)]
pub struct FullModelRunner {
    session: LayerSession,
    input_name: String,
    output_name: String,
    input_shape: Vec<usize>,
}

impl FullModelRunner {
    /// Builds the session for `full.onnx` of `variant` (hash-verified bytes, unless
    /// `options.load_from_file`).
    pub fn new(
        pkg: &ModelPackage,
        variant: &str,
        options: &RunnerOptions,
    ) -> Result<FullModelRunner, RunnerError> {
        let v = pkg.variant(variant)?;
        let path = pkg
            .full_model_path(variant)?
            .ok_or_else(|| PackageError::NoFullModel {
                manifest: pkg.manifest_path().to_path_buf(),
                variant: variant.to_string(),
            })?;
        let src = if options.load_from_file {
            Err(path.clone())
        } else {
            Ok(pkg.read_full_model(variant)?)
        };
        let output_shape = v
            .layers
            .last()
            .map(|l| l.output_shape.clone())
            .unwrap_or_default();
        let session = build_session(
            pkg,
            src,
            &path.display().to_string(),
            (pkg.input_shape(), &output_shape),
            options,
        )?;
        Ok(FullModelRunner {
            session: LayerSession {
                session,
                what: format!("{}/{} full model", pkg.name(), variant),
                output_shape,
            },
            input_name: pkg.input_name().to_string(),
            output_name: pkg.output_name().to_string(),
            input_shape: pkg.input_shape().to_vec(),
        })
    }

    /// Runs the fused model on `[N, *input_shape]`; returns the logits `[N, classes]`.
    pub fn run(&mut self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, RunnerError> {
        run_single(
            &mut self.session,
            input,
            &self.input_shape,
            (&self.input_name, &self.output_name),
        )
    }

    /// Expected input shape without batch dimension.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
}

#[derive(Debug)]
struct PoolInner<R> {
    idle: Mutex<Vec<R>>,
    available: Condvar,
    capacity: usize,
}

/// A bounded set of runners (or anything else) that callers check out one at a time.
///
/// Synchronous (Mutex + Condvar); cheap to clone (shared). A checked-out item returns to the pool
/// when its [`PoolGuard`] is dropped.
#[derive(Debug)]
pub struct RunnerPool<R = LayerRunner> {
    inner: Arc<PoolInner<R>>,
}

impl<R> Clone for RunnerPool<R> {
    fn clone(&self) -> Self {
        RunnerPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R> RunnerPool<R> {
    /// A pool holding `items` (its capacity is their number).
    pub fn new(items: Vec<R>) -> RunnerPool<R> {
        let capacity = items.len();
        RunnerPool {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(items),
                available: Condvar::new(),
                capacity,
            }),
        }
    }

    /// Builds `size` items with `make` (e.g. `|| LayerRunner::new(...)`).
    pub fn build<E>(
        size: usize,
        mut make: impl FnMut() -> Result<R, E>,
    ) -> Result<RunnerPool<R>, E> {
        let mut items = Vec::with_capacity(size);
        for _ in 0..size {
            items.push(make()?);
        }
        Ok(Self::new(items))
    }

    /// Takes an idle item, or `None` at once if all are checked out (overload).
    pub fn try_checkout(&self) -> Option<PoolGuard<R>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.pop().map(|item| self.guard(item))
    }

    /// Takes an idle item, waiting as long as needed. Returns `None` only for an empty pool.
    pub fn checkout(&self) -> Option<PoolGuard<R>> {
        if self.inner.capacity == 0 {
            return None;
        }
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(item) = idle.pop() {
                return Some(self.guard(item));
            }
            idle = self
                .inner
                .available
                .wait(idle)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Takes an idle item, waiting at most `timeout`.
    pub fn checkout_timeout(&self, timeout: Duration) -> Option<PoolGuard<R>> {
        let deadline = Instant::now() + timeout;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(item) = idle.pop() {
                return Some(self.guard(item));
            }
            let now = Instant::now();
            if now >= deadline || self.inner.capacity == 0 {
                return None;
            }
            idle = self
                .inner
                .available
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Number of items (checked out or not).
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Number of idle items now.
    pub fn idle(&self) -> usize {
        self.inner.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn guard(&self, item: R) -> PoolGuard<R> {
        PoolGuard {
            item: Some(item),
            pool: Arc::clone(&self.inner),
        }
    }
}

/// A checked-out item; derefs to it and returns it to the pool on drop.
#[derive(Debug)]
pub struct PoolGuard<R> {
    item: Option<R>,
    pool: Arc<PoolInner<R>>,
}

impl<R> std::ops::Deref for PoolGuard<R> {
    type Target = R;

    fn deref(&self) -> &R {
        match &self.item {
            Some(r) => r,
            None => unreachable!("PoolGuard item is present until drop"),
        }
    }
}

impl<R> std::ops::DerefMut for PoolGuard<R> {
    fn deref_mut(&mut self) -> &mut R {
        match &mut self.item {
            Some(r) => r,
            None => unreachable!("PoolGuard item is present until drop"),
        }
    }
}

impl<R> Drop for PoolGuard<R> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(item);
            drop(idle);
            self.pool.available.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_checkout_and_overload() {
        let pool = RunnerPool::new(vec![1u32, 2]);
        let a = pool.try_checkout().expect("first");
        let b = pool.try_checkout().expect("second");
        assert!(pool.try_checkout().is_none(), "overload detected");
        assert!(pool.checkout_timeout(Duration::from_millis(10)).is_none());
        assert_eq!(*a + *b, 3);
        drop(a);
        assert_eq!(pool.idle(), 1);
        let p2 = pool.clone();
        let h = std::thread::spawn(move || {
            let g = p2.checkout().expect("waits for b");
            *g
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(b);
        let got = h.join().expect("thread");
        assert!(got == 1 || got == 2);
        assert_eq!(pool.idle(), 2);
        assert!(RunnerPool::<u32>::new(vec![]).checkout().is_none());
    }
}
