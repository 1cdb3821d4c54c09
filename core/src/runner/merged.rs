//! [`MergedRunner`]: a layer range as one ONNX Runtime session.

use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD};

use super::{build_session, check_range, run_single, LayerSession, RunnerError, RunnerOptions};
use crate::package::ModelPackage;

/// Runs layers `[start, end)` of one variant as one session: the per-layer files (each read and
/// SHA-256-verified) composed into one model with [`jmdc_proto::onnx::compose_chain`]. Gives the
/// chain's outputs without a session boundary between layers; per-layer timing needs the chain
/// ([`super::LayerRunner`]).
#[derive(Debug)]
pub struct MergedRunner {
    session: LayerSession,
    range: Range<usize>,
    input_name: String,
    output_name: String,
    input_shape: Vec<usize>,
    model_bytes: usize,
}

impl MergedRunner {
    /// Composes layers `range` (`start < end <= L`) of `variant` and builds one session. Always
    /// from verified bytes in memory (`options.load_from_file` does not apply: there is no file).
    pub fn new(
        pkg: &ModelPackage,
        variant: &str,
        range: Range<usize>,
        options: &RunnerOptions,
    ) -> Result<MergedRunner, RunnerError> {
        let v = pkg.variant(variant)?;
        check_range(v, &range)?;
        let what = format!(
            "{}/{} layers {}..{} (merged)",
            pkg.name(),
            variant,
            range.start,
            range.end
        );
        let files = range
            .clone()
            .map(|i| pkg.read_layer(variant, i))
            .collect::<Result<Vec<_>, _>>()?;
        let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let model = jmdc_proto::onnx::compose_chain(&parts, pkg.input_name(), pkg.output_name())
            .map_err(|source| RunnerError::Compose {
                what: what.clone(),
                source,
            })?;
        let input_shape = pkg.split_tensor_shape(variant, range.start)?.to_vec();
        let output_shape = v.layers[range.end - 1].output_shape.clone();
        let model_bytes = model.len();
        let session = build_session(
            pkg,
            Ok(model),
            &what,
            (&input_shape, &output_shape),
            options,
        )?;
        Ok(MergedRunner {
            session: LayerSession {
                session,
                what,
                output_shape,
            },
            range,
            input_name: pkg.input_name().to_string(),
            output_name: pkg.output_name().to_string(),
            input_shape,
            model_bytes,
        })
    }

    /// Runs the range on `input` (`[N, *input_shape]`, N ≥ 1); returns `[N, *output_shape]`.
    pub fn run(&mut self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, RunnerError> {
        run_single(
            &mut self.session,
            input,
            &self.input_shape,
            (&self.input_name, &self.output_name),
        )
    }

    /// The layers run.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Expected input shape without batch dimension.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Output shape without batch dimension.
    pub fn output_shape(&self) -> &[usize] {
        &self.session.output_shape
    }

    /// Size of the composed model, bytes (what the session was built from).
    pub fn model_bytes(&self) -> usize {
        self.model_bytes
    }
}
