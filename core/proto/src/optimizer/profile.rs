//! Measured costs the optimizer's latency model is built from.

use serde::{Deserialize, Serialize};

use super::OptimizerError;

/// Default protocol framing overhead added to every request payload, in bytes.
///
/// Covers the message header of a frame (protocol version 2: 6 B + context id + frame-id varint,
/// 8–17 B) and a share of the QUIC/TLS framing (short header, STREAM frame, 16 B AEAD tag: about
/// 30 B per packet). A feature payload is counted as the codec's compact body
/// ([`crate::codec::compact::body_len`]), without the header fields its context fixes. Measure and
/// set [`Profile::header_overhead_bytes`] where it matters; the optimizer only needs it to be
/// roughly right because it is the same for every networked candidate. (It was 64 B with
/// version 1's self-describing requests, whose header carried the device, model and variant
/// names.)
pub const DEFAULT_HEADER_OVERHEAD_BYTES: usize = 40;

/// Affine cost model of one codec step: `fixed_us + per_element_us·elements + per_byte_us·bytes`.
///
/// `elements` is the element count of the split tensor (the encoder scans every value to rank
/// positions; the decoder writes every value), `bytes` the compact body a frame carries ([`crate::codec::compact::body_len`]; bit packing and
/// unpacking scale with it).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CodecCost {
    /// Per-call cost in µs.
    pub fixed_us: f64,
    /// Cost per tensor element in µs.
    pub per_element_us: f64,
    /// Cost per encoded payload byte in µs.
    pub per_byte_us: f64,
}

impl CodecCost {
    /// No cost at all.
    pub const ZERO: CodecCost = CodecCost {
        fixed_us: 0.0,
        per_element_us: 0.0,
        per_byte_us: 0.0,
    };

    /// Predicted cost in µs of one call on a tensor of `elements` values encoded into `bytes`.
    pub fn cost_us(&self, elements: usize, bytes: usize) -> f64 {
        self.fixed_us + self.per_element_us * elements as f64 + self.per_byte_us * bytes as f64
    }

    pub(crate) fn validate(&self, what: &'static str) -> Result<(), OptimizerError> {
        for v in [self.fixed_us, self.per_element_us, self.per_byte_us] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(OptimizerError::InvalidCost(what));
            }
        }
        Ok(())
    }
}

/// Measured profile of one model variant (one pruning level) with `L` layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantProfile {
    /// Variant name as in the model package (e.g. `"prune-50"`).
    pub name: String,
    /// Edge latency of each layer in µs at load factor 1; `L` entries.
    pub edge_layer_us: Vec<f64>,
    /// Cloud latency of each layer in µs; `L` entries.
    pub cloud_layer_us: Vec<f64>,
    /// Shapes (without batch) of the `L + 1` tensors between layers: `boundary_shapes[s]` is what
    /// crosses the network at split `s`. `[0]` is the model input (its element count is the size of
    /// the 8-bit image a cloud-only plan sends); `[L]` is the model output (never sent).
    pub boundary_shapes: Vec<Vec<usize>>,
}

impl VariantProfile {
    /// Number of layers `L`.
    pub fn layers(&self) -> usize {
        self.edge_layer_us.len()
    }

    pub(crate) fn validate(&self, index: usize) -> Result<(), OptimizerError> {
        let l = self.edge_layer_us.len();
        if l == 0 {
            return Err(OptimizerError::InvalidVariant {
                variant: index,
                reason: "no layers".into(),
            });
        }
        if self.cloud_layer_us.len() != l {
            return Err(OptimizerError::InvalidVariant {
                variant: index,
                reason: format!(
                    "{} edge layer times but {} cloud layer times",
                    l,
                    self.cloud_layer_us.len()
                ),
            });
        }
        if self.boundary_shapes.len() != l + 1 {
            return Err(OptimizerError::InvalidVariant {
                variant: index,
                reason: format!(
                    "{} layers need {} boundary shapes, found {}",
                    l,
                    l + 1,
                    self.boundary_shapes.len()
                ),
            });
        }
        let times = self.edge_layer_us.iter().chain(&self.cloud_layer_us);
        if let Some(bad) = times.copied().find(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(OptimizerError::InvalidVariant {
                variant: index,
                reason: format!("layer time {bad} µs is not a finite non-negative number"),
            });
        }
        for (s, shape) in self.boundary_shapes.iter().enumerate().take(l) {
            if shape.is_empty() || shape.contains(&0) {
                return Err(OptimizerError::InvalidVariant {
                    variant: index,
                    reason: format!("boundary shape {shape:?} at split {s} is empty"),
                });
            }
        }
        Ok(())
    }
}

/// Everything measured about the models and the codec that does not change with network
/// conditions. Shared by every decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// One entry per variant; candidates refer to variants by index into this list.
    pub variants: Vec<VariantProfile>,
    /// Edge-side feature encoding cost.
    pub encode: CodecCost,
    /// Cloud-side feature decoding cost.
    pub decode: CodecCost,
    /// Edge-side cost of sending the raw 8-bit image (cloud-only plans); elements = bytes = pixels.
    pub input_encode: CodecCost,
    /// Cloud-side cost of turning the raw 8-bit image into the model input (cloud-only plans).
    pub input_decode: CodecCost,
    /// Edge-side cost of JPEG-encoding the 8-bit image (cloud-only JPEG plans); elements =
    /// pixels of the input, bytes = the candidate's mean JPEG bytes.
    #[serde(default)]
    pub jpeg_encode: CodecCost,
    /// Cloud-side cost of decoding the JPEG and normalising it into the model input.
    #[serde(default)]
    pub jpeg_decode: CodecCost,
    /// Bytes added to every request payload by the protocol (see [`DEFAULT_HEADER_OVERHEAD_BYTES`]).
    pub header_overhead_bytes: usize,
    /// Edge-side cost of the whole encode of an entropy-coded plan (`QuantMode::Coded`):
    /// elements = split tensor elements, **bytes = its fixed-width compact body** (the range coder's work
    /// grows with the code bits it codes, not with the bytes it writes).
    #[serde(default)]
    pub coded_encode: CodecCost,
    /// Cloud-side cost of decoding an entropy-coded plan (same arguments as
    /// [`coded_encode`](Self::coded_encode)).
    #[serde(default)]
    pub coded_decode: CodecCost,
}

impl Profile {
    /// A profile with these variants, free codec steps and the default header overhead.
    pub fn new(variants: Vec<VariantProfile>) -> Self {
        Profile {
            variants,
            encode: CodecCost::ZERO,
            decode: CodecCost::ZERO,
            input_encode: CodecCost::ZERO,
            input_decode: CodecCost::ZERO,
            jpeg_encode: CodecCost::ZERO,
            jpeg_decode: CodecCost::ZERO,
            header_overhead_bytes: DEFAULT_HEADER_OVERHEAD_BYTES,
            coded_encode: CodecCost::ZERO,
            coded_decode: CodecCost::ZERO,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), OptimizerError> {
        if self.variants.is_empty() {
            return Err(OptimizerError::NoVariants);
        }
        for (i, v) in self.variants.iter().enumerate() {
            v.validate(i)?;
        }
        self.encode.validate("encode")?;
        self.decode.validate("decode")?;
        self.input_encode.validate("input_encode")?;
        self.input_decode.validate("input_decode")?;
        self.jpeg_encode.validate("jpeg_encode")?;
        self.jpeg_decode.validate("jpeg_decode")?;
        self.coded_encode.validate("coded_encode")?;
        self.coded_decode.validate("coded_decode")?;
        Ok(())
    }
}
